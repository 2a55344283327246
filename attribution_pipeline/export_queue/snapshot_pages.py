"""The snapshot rows of one export, read in bounded pages (keyset pagination).

PHP's worker reads ``findForRange(model, scope, scope_id, start_hour, end_hour)`` 500 rows at a
time with ``LIMIT/OFFSET``: ``date_hour BETWEEN start_hour AND end_hour`` (both ends inclusive),
ordered by ``date_hour``. The same rows are read here, inclusive at both ends too, ordered by
``date_hour`` then ``snapshot_id`` (ties in a stable order), one page per query, each page
starting after the last (date_hour, snapshot_id) seen: every query is an index range scan of
``model_hour_scope`` from where the previous one stopped, whatever the export's size, and memory
holds one page. A global export matches ``scope_type='global' AND scope_id IS NULL`` (Q18: the 0
PHP's v3 API stores is read as NULL); another scope matches its type and id.
"""

from collections.abc import Iterator

from sqlalchemy import text

from attribution_pipeline.export_queue.export_rules import ExportSpec

#: The columns of a file, in PHP's order (its header line).
COLUMNS = ("snapshot_id", "model_id", "scope_type", "scope_id", "date_hour", "lookback_start", "lookback_end",
           "attributed_clicks", "attributed_conversions", "attributed_revenue", "attributed_cost", "created_at")
PAGE_ROWS = 5000

_SELECT = ("SELECT " + ", ".join(COLUMNS) + " FROM `202_attribution_snapshots` "
           "WHERE model_id = :model_id AND scope_type = :scope_type AND {scope} "
           "AND date_hour BETWEEN :start_hour AND :end_hour "
           "AND date_hour >= :after_hour AND (date_hour > :after_hour OR snapshot_id > :after_id) "
           "ORDER BY date_hour, snapshot_id LIMIT :page_rows")
_GLOBAL = text(_SELECT.format(scope="scope_id IS NULL"))
_SCOPED = text(_SELECT.format(scope="scope_id = :scope_id"))


def snapshot_pages(engine, spec: ExportSpec, *, page_rows: int = PAGE_ROWS, retry=None) -> Iterator[list[tuple]]:
    """Pages of the export's rows (tuples in :data:`COLUMNS` order; DECIMALs as ``Decimal``).
    ``retry`` (a ``RetryPolicy``) runs each page's query again on a transient error."""
    statement = _GLOBAL if spec.is_global else _SCOPED
    params = {"model_id": spec.model_id, "scope_type": spec.scope_type, "start_hour": spec.start_hour,
              "end_hour": spec.end_hour, "after_hour": spec.start_hour, "after_id": 0, "page_rows": page_rows}
    if not spec.is_global:
        params["scope_id"] = spec.scope_id

    def page() -> list[tuple]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(statement, params)]

    while True:
        rows = retry.run(page, what="export page read") if retry is not None else page()
        if rows:
            yield rows
        if len(rows) < page_rows:
            return
        params["after_hour"], params["after_id"] = int(rows[-1][4]), int(rows[-1][0])
