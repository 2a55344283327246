"""Fitting the data-driven model's Markov chains from MySQL, and finding the fit an hour uses (D32).

The fit an hour ``H`` uses is the one whose training window ends at the start of ``H``'s UTC day:
``[day_start - training_days x 86400, day_start)``. It only looks back (no conversion of ``H``'s
day trains it), and every rerun of an hour finds the same fit, whoever made it: the daily
``attribution_markov_fit`` job (which fits the day that just ended) or a run that found it missing
and fitted it first. A model edit or a new visitor recipe changes the config hash, and so needs
(and makes) a new fit: a fit is never used for a configuration it was not made with.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl
from sqlalchemy import inspect, select

from attribution_pipeline.core.hours import HOUR
from attribution_pipeline.core.markov_chain import MarkovFit, fit_markov
from attribution_pipeline.core.visitor_paths import training_paths
from attribution_pipeline.errors import MarkovFitsTableMissing
from attribution_pipeline.storage import markov_fits, prosper_reads, tables
from attribution_pipeline.storage.database import Database
from attribution_pipeline.storage.frame_io import chunked, read_frame
from attribution_pipeline.storage.visitor_clicks import read_visitor_clicks

DAY = 24 * HOUR
#: The columns of a frames.MODELS row a fit depends on.
FIT_PARAMS = ("model_id", "user_id", "markov_channel", "markov_order", "training_days", "self_loops")


def day_start(hour: int) -> int:
    """The start (UTC) of the day of ``hour``: the end of the training window its credits use."""
    return hour - hour % DAY


def markov_models(models: pl.DataFrame) -> pl.DataFrame:
    """One row per valid Markov model of a frames.MODELS frame, with :data:`FIT_PARAMS`."""
    return (models.filter(pl.col("is_valid") & (pl.col("strategy") == "markov"))
            .select(FIT_PARAMS).unique(subset="model_id").sort("model_id"))


def _hash(model: Mapping, recipe: str) -> str:
    return markov_fits.config_hash(model["markov_channel"], model["markov_order"], model["training_days"],
                                   model["self_loops"], recipe)


def fit_keys(models: pl.DataFrame, hours: Iterable[int], recipe: str) -> pl.DataFrame:
    """markov_fits.FIT_KEYS (plus ``user_id``) of every Markov model of ``models`` for the days of ``hours``."""
    days = sorted({day_start(h) for h in hours})
    rows = [{"model_id": m["model_id"], "user_id": m["user_id"], "window_end": d, "config_hash": _hash(m, recipe)}
            for m in markov_models(models).iter_rows(named=True) for d in days]
    return pl.DataFrame(rows, schema={"model_id": pl.Int64, "user_id": pl.Int64, "window_end": pl.Int64,
                                      "config_hash": pl.String})


@dataclass(frozen=True)
class TrainedFit:
    """A fit made for one model and window, with what it was trained on."""

    row: markov_fits.FitRow
    clicks: int

    @property
    def fit(self) -> MarkovFit:
        return self.row.fit


def train(db: Database, model: Mapping, window_end: int, recipe: str) -> TrainedFit:
    """Fit ``model`` (a :data:`FIT_PARAMS` mapping) on its user's visitor paths of the window ending at ``window_end``."""
    user, start = int(model["user_id"]), max(0, window_end - int(model["training_days"]) * DAY)
    hours = range(start, window_end, HOUR)
    with db.engine().connect() as conn:
        conv = prosper_reads.conversions(conn, list(hours), [user])
    conv = conv.filter(pl.col("click_rows") > 0)
    clicks = read_visitor_clicks(db, [user], start, window_end - 1, recipe)  # no converting click outside it
    paths = training_paths(clicks, conv, model["markov_channel"], start, window_end - 1)
    fit = fit_markov(paths, order=int(model["markov_order"]), self_loops=bool(model["self_loops"]))
    row = markov_fits.FitRow(model_id=int(model["model_id"]), user_id=user, window_start=start,
                             window_end=window_end, config_hash=_hash(model, recipe), fit=fit)
    return TrainedFit(row=row, clicks=clicks.height)


def ensure_fits(db: Database, models: pl.DataFrame, hours: Iterable[int], recipe: str, *,
                logger=None) -> tuple[pl.DataFrame, list[TrainedFit]]:
    """The shares (markov_fits.SHARES) the Markov models of ``models`` use for ``hours``, fitting
    and storing first every fit that is missing; returns them and the fits made."""
    keys = fit_keys(models, hours, recipe)
    if keys.height == 0:
        return pl.DataFrame(schema=markov_fits.SHARES), []
    with db.engine().connect() as conn:
        if not inspect(conn).has_table(tables.markov_fits.name):
            raise MarkovFitsTableMissing(
                f"{markov_models(models).height} Markov model(s) need the table {tables.markov_fits.name} for their "
                "fits (D32): run `attribution init-db` (it creates missing tables only)")
    found = markov_fits.stored_keys(db, keys.select(list(markov_fits.FIT_KEYS)))
    missing = keys.join(found, on=list(markov_fits.FIT_KEYS), how="anti")
    params = markov_models(models)
    made = []
    for key in missing.iter_rows(named=True):
        model = params.filter(pl.col("model_id") == key["model_id"]).row(0, named=True)
        trained = train(db, model, key["window_end"], recipe)
        markov_fits.store_fit(db, trained.row)
        made.append(trained)
        if logger is not None:
            logger.info(f"markov fit made: model {key['model_id']}, window ending {key['window_end']}, "
                        f"{round(trained.fit.paths_used)} paths")
    return markov_fits.load_shares(db, keys.select(list(markov_fits.FIT_KEYS))), made


def account_networks(db: Database, account_ids: list[int]) -> pl.DataFrame:
    """``account_id -> network_id`` (``202_ppc_accounts.ppc_network_id``) of ``account_ids``."""
    acc = tables.ppc_accounts.c
    parts = [pl.DataFrame(schema={"account_id": pl.Int64, "network_id": pl.Int64})]
    with db.engine().connect() as conn:
        for ids in chunked(sorted(set(account_ids)), 5000):
            stmt = select(acc.ppc_account_id.label("account_id"), acc.ppc_network_id.label("network_id")).where(
                acc.ppc_account_id.in_(ids))
            parts.append(read_frame(conn, stmt, {"account_id": pl.Int64, "network_id": pl.Int64}))
    return pl.concat(parts)
