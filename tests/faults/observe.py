"""What MariaDB holds after (or during) a run, hour by hour, read over a connection of our own.

* :func:`stored_by_hour`: each hour's snapshots and touchpoints as comparable tuples (ids and
  ``created_at`` left out: a rewritten key keeps its snapshot id and created_at), read in one
  consistent snapshot;
* :func:`verdicts`: for each hour, ``old`` (the rows before the run), ``new`` (exactly what a
  clean run writes) or ``mixed`` (anything else: a torn hour);
* :func:`hour_problems`: whether each hour was written by one transaction, without knowing what
  it should hold (for runs racing with changes of the source data);
* the audit rows, the System Checks stamp, the named locks still held.
"""

import json
import time
from collections import Counter
from dataclasses import dataclass

from attribution_pipeline.storage import database, locks
from faults.killer import server_connect

SNAPSHOT_COLUMNS = ("model_id", "user_id", "date_hour", "scope_type", "scope_id", "lookback_start", "lookback_end",
                    "attributed_clicks", "attributed_conversions", "attributed_revenue", "attributed_cost")
TOUCHPOINT_COLUMNS = ("model_id", "user_id", "date_hour", "conv_id", "position", "click_id", "credit", "weight")


@dataclass(frozen=True)
class HourRows:
    snapshots: tuple = ()
    touchpoints: tuple = ()

    def __repr__(self) -> str:
        return f"HourRows({len(self.snapshots)} snapshots, {len(self.touchpoints)} touchpoints)"


EMPTY = HourRows()


def _plain(value):
    return None if value is None else str(value) if not isinstance(value, (int, str)) else value


def _consistent_read(url: str, statements: list[str]) -> list[list[tuple]]:
    conn = server_connect(url, database=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            results = []
            for sql in statements:
                cur.execute(sql)
                results.append([tuple(_plain(v) for v in row) for row in cur.fetchall()])
            cur.execute("COMMIT")
        return results
    finally:
        conn.close()


def stored_by_hour(url: str) -> dict[int | None, HourRows]:
    """Every hour's rows (touchpoints whose snapshot is gone are under the key None)."""
    snaps, touches = _consistent_read(url, [
        f"SELECT {', '.join(SNAPSHOT_COLUMNS)} FROM `202_attribution_snapshots`",
        "SELECT s.model_id, s.user_id, s.date_hour, t.conv_id, t.position, t.click_id, t.credit, t.weight "
        "FROM `202_attribution_touchpoints` t LEFT JOIN `202_attribution_snapshots` s "
        "ON s.snapshot_id = t.snapshot_id",
    ])
    hours: dict[int | None, tuple[list, list]] = {}
    for row in snaps:
        hours.setdefault(row[2], ([], []))[0].append(row)
    for row in touches:
        hours.setdefault(row[2], ([], []))[1].append(row)
    return {h: HourRows(tuple(sorted(s, key=repr)), tuple(sorted(t, key=repr))) for h, (s, t) in hours.items()}


def verdicts(stored: dict, before: dict, clean: dict, hours) -> dict[int, str]:
    """``old`` (as ``before``), ``new`` (as ``clean``) or ``mixed``, for each of ``hours``."""
    out = {}
    for hour in hours:
        got = stored.get(hour, EMPTY)
        out[hour] = "new" if got == clean.get(hour, EMPTY) else "old" if got == before.get(hour, EMPTY) else "mixed"
    return out


def describe_difference(got: HourRows, want: HourRows) -> str:
    missing_s = sorted(set(want.snapshots) - set(got.snapshots), key=repr)[:2]
    extra_s = sorted(set(got.snapshots) - set(want.snapshots), key=repr)[:2]
    missing_t = len(set(want.touchpoints) - set(got.touchpoints))
    extra_t = len(set(got.touchpoints) - set(want.touchpoints))
    return (f"{got!r} vs {want!r}; snapshots missing e.g. {missing_s}, unexpected e.g. {extra_s}; "
            f"touchpoints missing {missing_t}, unexpected {extra_t}")


def hour_problems(url: str, models_of_user: dict[int, set[int]]) -> list[str]:
    """Signs that an hour was not written by exactly one transaction: snapshots of one hour with
    different run windows, touchpoints of one hour with different created_at, a key (scope included) stored twice,
    a snapshot whose clicks/conversions differ from its touchpoints, touchpoints without their
    snapshot, a user with some of its models but not all."""
    snaps, touches = _consistent_read(url, [
        "SELECT snapshot_id, model_id, user_id, date_hour, lookback_start, lookback_end, attributed_clicks, "
        "attributed_conversions, scope_type, scope_id FROM `202_attribution_snapshots`",
        "SELECT t.snapshot_id, t.conv_id, t.created_at, s.date_hour FROM `202_attribution_touchpoints` t "
        "LEFT JOIN `202_attribution_snapshots` s ON s.snapshot_id = t.snapshot_id",
    ])
    problems = []
    windows, created, keys, models = {}, {}, Counter(), {}
    per_snapshot: dict[int, list] = {}
    for sid, model, user, hour, lb_start, lb_end, _clicks, _convs, scope, scope_id in snaps:
        windows.setdefault(hour, set()).add((lb_start, lb_end))
        keys[(model, user, hour, scope, scope_id)] += 1
        models.setdefault((user, hour), set()).add(model)
    for sid, conv, created_at, hour in touches:
        if hour is None:
            problems.append(f"touchpoint of snapshot {sid} (conversion {conv}) without its snapshot")
            continue
        created.setdefault(hour, set()).add(created_at)
        per_snapshot.setdefault(sid, []).append(conv)
    for hour, found in sorted(windows.items()):
        if len(found) > 1:
            problems.append(f"hour {hour}: snapshots of {len(found)} run windows {sorted(found)}")
    for hour, found in sorted(created.items()):
        if len(found) > 1:
            problems.append(f"hour {hour}: touchpoints written at {len(found)} times {sorted(found)}")
    problems += [f"key {k} stored {n} times" for k, n in keys.items() if n > 1]
    for sid, model, user, hour, _s, _e, clicks, convs, scope, _ in snaps:
        if scope != "global":  # scoped conversions are apportioned (D31): no distinct count to compare
            continue
        touched = per_snapshot.get(sid, [])
        if clicks != len(touched) or convs != len(set(touched)):
            problems.append(f"snapshot {sid} ({model}, {user}, {hour}): {clicks} clicks / {convs} conversions, "
                            f"{len(touched)} touchpoints of {len(set(touched))} conversions")
    for (user, hour), found in sorted(models.items()):
        expected = models_of_user.get(user, found)
        if found != expected:
            problems.append(f"hour {hour} user {user}: models {sorted(found)} of {sorted(expected)}")
    return problems


def touchpoint_ids_by_hour(url: str) -> dict[int, frozenset[int]]:
    (rows,) = _consistent_read(url, [
        "SELECT s.date_hour, t.touchpoint_id FROM `202_attribution_touchpoints` t "
        "JOIN `202_attribution_snapshots` s ON s.snapshot_id = t.snapshot_id"])
    out: dict[int, set[int]] = {}
    for hour, tid in rows:
        out.setdefault(hour, set()).add(tid)
    return {h: frozenset(ids) for h, ids in out.items()}


def audit_rows(url: str) -> list[dict]:
    (rows,) = _consistent_read(url, [
        "SELECT audit_id, user_id, model_id, action, metadata, created_at FROM `202_attribution_audit` "
        "ORDER BY audit_id"])
    return [{"audit_id": a, "user_id": u, "model_id": m, "action": act, "metadata": json.loads(meta or "{}"),
             "created_at": c} for a, u, m, act, meta, c in rows]


def audit_signature(rows: list[dict]) -> Counter:
    """(user, model, clicks, conversions) of ``snapshot_rebuild`` audit rows: one per (user, model)
    and chunk, carrying the chunk's sums; with one hour per chunk, the hour's snapshot values."""
    return Counter((r["user_id"], r["model_id"], r["metadata"].get("clicks"), r["metadata"].get("conversions"))
                   for r in rows if r["action"] == "snapshot_rebuild")


def expected_audit(clean: dict, hours) -> Counter:
    """What the audit rows of chunks of one hour each, covering ``hours``, carry (see above)."""
    want = Counter()
    for hour in hours:
        for snap in clean.get(hour, EMPTY).snapshots:
            row = dict(zip(SNAPSHOT_COLUMNS, snap))
            if row["scope_type"] != "global":  # the audit carries the global rows' sums (D18); scoped rows: D31
                continue
            want[(row["user_id"], row["model_id"], row["attributed_clicks"], row["attributed_conversions"])] += 1
    return want


def cron_stamp(url: str) -> int | None:
    (rows,) = _consistent_read(url, ["SELECT last_execution_time FROM `202_cronjob_logs` WHERE id = 2"])
    return rows[0][0] if rows else None


def lock_names(url: str, hours, run_ids=()) -> list[str]:
    """The write-back's hour locks of ``hours`` and the run locks of ``run_ids`` (when the
    pipeline has run locks)."""
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            names = [locks.lock_name(conn, hour) for hour in hours]
    finally:
        engine.dispose()
    try:
        from attribution_pipeline.storage.run_locks import run_lock_name
    except ImportError:
        run_lock_name = None
    if run_lock_name is not None:
        names += [run_lock_name(run_id) for run_id in run_ids if run_id]
    return names


def held_locks(url: str, names: list[str], *, wait: float = 10.0) -> dict[str, int]:
    """The named locks of ``names`` still held after up to ``wait`` seconds (name -> holder id):
    the server frees a dead client's locks once it notices the connection dropped."""
    deadline = time.monotonic() + wait
    conn = server_connect(url)
    try:
        while True:
            held = {}
            with conn.cursor() as cur:
                for name in names:
                    cur.execute("SELECT IS_USED_LOCK(%s)", (name,))
                    holder = cur.fetchone()[0]
                    if holder is not None:
                        held[name] = holder
            if not held or time.monotonic() > deadline:
                return held
            time.sleep(0.2)
    finally:
        conn.close()


def max_touchpoint_id(url: str) -> int:
    (rows,) = _consistent_read(url, ["SELECT COALESCE(MAX(touchpoint_id), 0) FROM `202_attribution_touchpoints`"])
    return rows[0][0]
