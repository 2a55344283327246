"""The stored Markov fits of the data-driven model (D32): ``attribution_markov_fits`` and ``_effects``.

A fit is keyed by (model, end of its training window, config hash): the hash covers every
parameter the fit depends on (channel, order, training days, self loops, the visitor recipe), so
a model edit or a new recipe needs a new fit and the old one is never used for it. Storing a fit
replaces the one of its key in one transaction (a crash leaves the old fit or the new one).
Only channel ids and counts are stored: no visitor attribute.
"""

import hashlib
import json
import time
from dataclasses import dataclass

import polars as pl
from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.markov_chain import MarkovFit
from attribution_pipeline.core.markov_credit import credit_shares
from attribution_pipeline.storage import tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import read_frame

#: The shares of stored fits, one row per (fit key, channel): what ``split_credit`` takes.
SHARES = {"model_id": pl.Int64, "window_end": pl.Int64, "channel": pl.Int64, "model_channel": pl.Int64,
          "share": pl.Float64}
#: One row per model and training window whose fit is wanted.
FIT_KEYS = {"model_id": pl.Int64, "window_end": pl.Int64, "config_hash": pl.String}


def config_hash(channel: str, order: int, training_days: int, self_loops: bool, visitor_recipe: str) -> str:
    """The fit parameters' hash (32 hex digits): equal parameters give the same stored fit."""
    text = json.dumps([channel, int(order), int(training_days), bool(self_loops), visitor_recipe])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FitRow:
    """One fit to store: its key, its training window and the fit itself."""

    model_id: int
    user_id: int
    window_start: int
    window_end: int
    config_hash: str
    fit: MarkovFit


def _transitions_json(fit: MarkovFit) -> str:
    rows = fit.transitions.select("from_prev", "from_channel", "to_channel", "count").rows()
    return json.dumps({"order": fit.order, "self_loops": fit.self_loops, "transitions": rows})


def store_fit(db: Database, row: FitRow, *, now: int | None = None) -> int:
    """Store ``row``'s fit (replacing its key's earlier one) in one transaction; returns its fit id."""
    fit = row.fit
    effects = credit_shares(fit).join(
        fit.channels.select(model_channel="channel", removal_effect="removal_effect"), on="model_channel", how="left")

    def write() -> int:
        with db.engine().begin() as conn:
            _delete_keys(conn, [(row.model_id, row.window_end, row.config_hash)])
            result = conn.execute(insert(tables.markov_fits).values(
                model_id=row.model_id, user_id=row.user_id, window_start=row.window_start,
                window_end=row.window_end, config_hash=row.config_hash, paths=round(fit.paths_used),
                converting_paths=round(fit.conversions_used), conversion_probability=fit.conversion_probability,
                transitions=_transitions_json(fit), fitted_at=int(now if now is not None else time.time())))
            fit_id = int(result.inserted_primary_key[0])
            if effects.height:
                conn.execute(insert(tables.markov_effects), [
                    {"fit_id": fit_id, "channel_id": c, "model_channel": m, "removal_effect": float(e or 0.0),
                     "share": float(s)}
                    for c, m, s, e in effects.select("channel", "model_channel", "share", "removal_effect").rows()])
            return fit_id

    return db.retry.run(write, what="store a markov fit")


def _key_filter(keys):
    fits = tables.markov_fits.c
    return or_(*(and_(fits.model_id == m, fits.window_end == w, fits.config_hash == h) for m, w, h in keys))


def _delete_keys(conn: Connection, keys) -> None:
    ids = [r[0] for r in conn.execute(select(tables.markov_fits.c.fit_id).where(_key_filter(keys)))]
    if ids:
        conn.execute(delete(tables.markov_effects).where(tables.markov_effects.c.fit_id.in_(ids)))
        conn.execute(delete(tables.markov_fits).where(tables.markov_fits.c.fit_id.in_(ids)))


def stored_keys(db: Database, keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``keys`` (:data:`FIT_KEYS`) that have a stored fit."""
    if keys.height == 0:
        return keys.cast(FIT_KEYS)
    fits = tables.markov_fits.c
    stmt = select(fits.model_id, fits.window_end, fits.config_hash).where(_key_filter(keys.rows()))
    found = db.retry.run(lambda: _read(db, stmt, FIT_KEYS), what="stored markov fits")
    return keys.cast(FIT_KEYS).join(found, on=list(FIT_KEYS), how="semi")


def load_shares(db: Database, keys: pl.DataFrame) -> pl.DataFrame:
    """:data:`SHARES` of the stored fits of ``keys`` (:data:`FIT_KEYS`); a key without a fit has no rows."""
    if keys.height == 0:
        return pl.DataFrame(schema=SHARES)
    fits, effects = tables.markov_fits.c, tables.markov_effects.c
    stmt = (select(fits.model_id, fits.window_end, effects.channel_id.label("channel"), effects.model_channel,
                   effects.share)
            .select_from(tables.markov_fits.join(tables.markov_effects, effects.fit_id == fits.fit_id))
            .where(_key_filter(keys.rows())))
    return db.retry.run(lambda: _read(db, stmt, SHARES), what="markov shares")


def _read(db: Database, stmt, schema: dict) -> pl.DataFrame:
    with db.engine().connect() as conn:
        return read_frame(conn, stmt, schema)


def delete_model_fits(conn: Connection, model_ids: list[int] | None = None, *, user_id: int | None = None) -> int:
    """Delete every fit of ``model_ids`` (a deleted model) or of ``user_id`` (an erased user);
    returns the fits deleted."""
    fits = tables.markov_fits.c
    where = fits.user_id == user_id if user_id is not None else fits.model_id.in_(list(model_ids or []))
    ids = [r[0] for r in conn.execute(select(fits.fit_id).where(where))]
    if ids:
        conn.execute(delete(tables.markov_effects).where(tables.markov_effects.c.fit_id.in_(ids)))
        conn.execute(delete(tables.markov_fits).where(tables.markov_fits.c.fit_id.in_(ids)))
    return len(ids)
