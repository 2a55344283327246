"""Parquet exports for analysts: what the pipeline stored, one file per table and UTC hour.

Modules: :mod:`.layout` (paths, atomic files, the lock), :mod:`.columns` (the pinned schema),
:mod:`.stored` (set-based reads of what MySQL stores), :mod:`.from_run` (the touchpoints the run
just wrote, from its credits frame, instead of re-read from MySQL), :mod:`.shares` (exact allocation
of stored totals), :mod:`.build` (the frames), :mod:`.journey_plan` (where each hour's journeys come
from), :mod:`.spend` (every click's spend per hour), :mod:`.runner` (a chunk of hours end to end),
:mod:`.reconcile` (files against MySQL).

Layout (hive-partitioned, one dataset folder per table; DuckDB reads each table with
``read_parquet('<root>/<table>/**/*.parquet', hive_partitioning = true)``)::

    $ATTRIBUTION_EXPORT_DIR/            (default $ATTRIBUTION_HOME/exports)
        snapshots/date=2025-03-01/hour=09/part.parquet
        touchpoints/date=2025-03-01/hour=09/part.parquet
        journeys/date=2025-03-01/hour=09/part.parquet
        click_spend/date=2025-03-01/hour=09/part.parquet

``date``/``hour`` are the UTC hour of the *conversions* (Prosper202's ``date_hour``, D17; in
``click_spend``, of the clicks). Every exported hour has exactly one file per table (an hour without rows has an empty file), written to
a temporary name and renamed into place, so a reader never sees a partial file or two versions of
an hour, and a crash leaves the previous file (plus, at worst, an ignored ``.tmp``).

What an hour holds (column meanings in ``docs/exports.md``):

* ``snapshots``: every global row of ``202_attribution_snapshots`` stored for the hour *after the
  write-back committed*: all users and all models, including rows of inactive models and of users a
  ``--user`` run did not select (those rows are still in MySQL, so they are still exported). The
  money columns are the stored DECIMAL(12,4) values, so DuckDB totals equal MySQL totals exactly.
* ``touchpoints``: every ``202_attribution_touchpoints`` row of those snapshots, with the model,
  the conversion (time, payout), the touch click (time, campaign, traffic source, landing page,
  its own cpc; ``202_clicks`` deduplicated by click id as in D15) and two extra measures (D5):
  ``revenue_share`` and ``cost_share``, the snapshot's stored revenue and cost split over its
  touches in proportion to ``payout x credit`` and ``converting cpc x credit`` and rounded to
  4 decimals by largest remainder (:func:`allocate`), so that they sum *exactly* to the stored
  snapshot totals. (``conversion_payout * credit`` summed over a snapshot differs from the stored
  total by the rounding of the stored credits, about ``payout x touches x 0.000005`` at most.)
  ``position`` is the stored one (PHP records last-touch credit at position 0, Q11);
  ``journey_position``/``journey_length`` place each touch in its journey.
* ``journeys``: one row per touch of every conversion's journey (credited or not), with the
  journey length. Journeys are not stored in MySQL (D13), so they come from the pipeline's
  ``journeys`` asset, the export asset's declared input: after a full run, the frames the run just
  wrote; after a scoped run (``--user``/``--model``) the selected users' journeys of the run
  replace only their rows in the hour's existing file, so a scoped run never truncates the hour.
  An hour whose input frame is missing, or (in a scoped run) that has no export file yet, is
  recomputed for every user with the same journey builder the asset uses.
* ``click_spend``: the spend of every click of the hour in ``202_clicks`` (journey clicks or not),
  per (user, campaign, ppc account, landing page), a click id stored twice in a user's hour
  counted once (:mod:`.spend`).

Writers of one export folder take turns (an ``flock`` on ``.export.lock`` around read + write; a
run's export step holds it for all its chunks, reading the next chunk while it writes this one), so
the last file written for an hour holds the latest committed state. No personal data: ``ip``, ``user_agent`` and referer-like columns are never selected. Reads are
SQLAlchemy Core with bound parameters (``storage.frame_io.read_frame``); frames are built with Polars
expressions.
"""
