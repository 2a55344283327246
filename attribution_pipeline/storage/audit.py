"""After a run that committed: the audit rows (D18) and Prosper202's System Checks stamp (D11)."""

import polars as pl
from sqlalchemy import update
from sqlalchemy.engine import Engine

from attribution_pipeline.storage import tables
from attribution_pipeline.storage.bulk import bulk_insert


def finish_run(engine: Engine, audits: pl.DataFrame, *, now: int, touch_cron_log: bool) -> None:
    """Insert the audit rows and, when the run committed (D19 outcome 0 or 2), stamp
    ``202_cronjob_logs`` id 2 so Prosper202's System Checks page stays green (D11)."""
    logs = tables.cronjob_logs
    with engine.begin() as conn:
        bulk_insert(conn, tables.attribution_audit, audits)
        if touch_cron_log:
            changed = conn.execute(
                update(logs).where(logs.c.id == tables.CRONJOB_LOG_ID_ATTRIBUTION).values(last_execution_time=now)
            ).rowcount
            if not changed:
                conn.execute(logs.insert().values(id=tables.CRONJOB_LOG_ID_ATTRIBUTION, last_execution_time=now))
