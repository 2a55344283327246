"""Reads and writes of the model-change sensor (D26): the deciding columns of every model and
settings row, and the audit rows of the changes it detects."""

import json

from sqlalchemy import select
from sqlalchemy.engine import Connection

from attribution_pipeline.core.change_diff import MODEL_FIELDS, SETTING_FIELDS, Change
from attribution_pipeline.storage import tables


def model_rows(conn: Connection) -> list[dict]:
    """``model_id`` and the deciding columns of every row of ``202_attribution_models``."""
    m = tables.attribution_models
    return [dict(r._mapping) for r in conn.execute(select(m.c.model_id, *[m.c[c] for c in MODEL_FIELDS]))]


def setting_rows(conn: Connection) -> list[dict]:
    """``setting_id`` and the deciding columns of every row of ``202_attribution_settings``."""
    s = tables.attribution_settings
    return [dict(r._mapping) for r in conn.execute(select(s.c.setting_id, *[s.c[c] for c in SETTING_FIELDS]))]


def record_changes(conn: Connection, changes: list[Change], *, now: int) -> int:
    """One ``202_attribution_audit`` row per change (actions ``model_change_detected`` and
    ``settings_change_detected``; Prosper202's API writes ``model_update`` for its own edits)."""
    if not changes:
        return 0
    rows = [{"user_id": c.user_id, "model_id": c.model_id, "action": c.action,
             "metadata": json.dumps(c.metadata, separators=(",", ":"), sort_keys=True), "created_at": now}
            for c in changes]
    conn.execute(tables.attribution_audit.insert(), rows)
    return len(rows)
