"""What changed in Prosper202's model and settings rows since the last look (D26).

The ``attribution_model_changes`` sensor keeps, in its cursor, one small entry per row of
``202_attribution_models`` and ``202_attribution_settings``: the columns that decide stored rows
(a model's owner, ``is_active``, ``model_type``, a hash of ``weighting_config``; a setting's
owner, scope and switch) and a hash of them, never the rows themselves and never ``updated_at``
(some Prosper202 paths do not set it). Comparing two such states gives the changes (created,
edited, deleted), each with the audit metadata that says what changed, and the scope of the run
that rewrites what they affect. Plain Python, no I/O.
"""

import hashlib
import json
from dataclasses import dataclass, field

#: The model columns a stored row depends on (spec §3.6): not the name, slug or default flag.
MODEL_FIELDS = ("user_id", "model_type", "weighting_config", "is_active")
#: The settings columns the multi-touch switch is resolved from (spec §5.1, D13).
SETTING_FIELDS = ("user_id", "scope_type", "scope_id", "multi_touch_enabled")
MODEL_ACTION, SETTINGS_ACTION = "model_change_detected", "settings_change_detected"


def short_hash(value) -> str:
    """16 hex digits of the SHA-256 of ``value`` as sorted JSON (None and '' differ)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_entry(row: dict) -> list:
    """``[user_id, is_active, model_type, weighting_config hash, hash of every deciding field]``."""
    values = {k: row.get(k) for k in MODEL_FIELDS}
    return [int(row["user_id"]), int(row["is_active"]), str(row["model_type"]),
            short_hash(row.get("weighting_config")), short_hash(values)]


def setting_entry(row: dict) -> list:
    """``[user_id, multi_touch_enabled, scope_type, hash of every deciding field]``."""
    values = {k: row.get(k) for k in SETTING_FIELDS}
    return [int(row["user_id"]), int(row["multi_touch_enabled"]), str(row["scope_type"]), short_hash(values)]


def observe(model_rows: list[dict], setting_rows: list[dict]) -> dict:
    """The state kept in the cursor: ``{"m": {model_id: entry}, "s": {setting_id: entry}}`` (JSON keys)."""
    return {"m": {str(int(r["model_id"])): model_entry(r) for r in model_rows},
            "s": {str(int(r["setting_id"])): setting_entry(r) for r in setting_rows}}


@dataclass(frozen=True)
class Change:
    """One row created, edited or deleted; ``metadata`` is its audit row's JSON."""

    action: str  # MODEL_ACTION or SETTINGS_ACTION
    user_id: int
    model_id: int | None
    metadata: dict


def _model_fields(old: list, new: list) -> dict:
    fields = {}
    if old[0] != new[0]:
        fields["user_id"] = {"old": old[0], "new": new[0]}
    if old[1] != new[1]:
        fields["is_active"] = {"old": old[1], "new": new[1]}
    if old[2] != new[2]:
        fields["model_type"] = {"old": old[2], "new": new[2]}
    if old[3] != new[3]:
        fields["weighting_config"] = {"old_hash": old[3], "new_hash": new[3]}
    return fields


def _model_changes(old: dict, new: dict) -> list[Change]:
    out = []
    for key in sorted(set(old) | set(new), key=int):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before is None:
            meta = {"change": "created", "is_active": after[1], "model_type": after[2], "weighting_config_hash": after[3]}
        elif after is None:
            meta = {"change": "deleted", "is_active": before[1], "model_type": before[2]}
        else:
            meta = {"change": "edited", "fields": _model_fields(before, after)}
        out.append(Change(MODEL_ACTION, (after or before)[0], int(key), meta))
    return out


def _setting_changes(old: dict, new: dict) -> list[Change]:
    out = []
    for key in sorted(set(old) | set(new), key=int):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        change = "created" if before is None else "deleted" if after is None else "edited"
        meta = {"change": change, "setting_id": int(key), "scope_type": (after or before)[2],
                "multi_touch_enabled": {"old": before[1] if before else None, "new": after[1] if after else None}}
        if before and after and before[0] != after[0]:
            meta["user_id"] = {"old": before[0], "new": after[0]}
        out.append(Change(SETTINGS_ACTION, (after or before)[0], None, meta))
        if before and after and before[0] != after[0]:  # moved to another user: both users' rows change
            out.append(Change(SETTINGS_ACTION, before[0], None, meta))
    return out


def diff(old: dict, new: dict) -> list[Change]:
    """Every model and settings row created, edited or deleted from state ``old`` to ``new``."""
    return _model_changes(old.get("m", {}), new.get("m", {})) + _setting_changes(old.get("s", {}), new.get("s", {}))


@dataclass
class Pending:
    """Changes seen and not yet acted on: the users whose settings changed, the models created or
    edited, the models deleted (with their owners), and when the first and the latest were seen."""

    users: set[int] = field(default_factory=set)
    models: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    first_seen: float = 0.0
    last_seen: float = 0.0

    def add(self, changes: list[Change], now: float) -> None:
        for change in changes:
            if change.action == SETTINGS_ACTION:
                self.users.add(change.user_id)
            elif change.metadata["change"] == "deleted":
                self.deleted.add(change.model_id)
                self.models.discard(change.model_id)
            else:
                self.models.add(change.model_id)
                self.deleted.discard(change.model_id)
        self.first_seen = self.first_seen or now
        self.last_seen = now

    def to_json(self) -> dict:
        return {"users": sorted(self.users), "models": sorted(self.models), "deleted": sorted(self.deleted),
                "first_seen": self.first_seen, "last_seen": self.last_seen}

    @classmethod
    def from_json(cls, value: dict | None) -> "Pending | None":
        if not value:
            return None
        return cls(set(value["users"]), set(value["models"]), set(value["deleted"]), value["first_seen"],
                   value["last_seen"])


@dataclass(frozen=True)
class RebuildScope:
    """What the rebuild run covers: ``users`` and ``models`` as the ``scope`` resource reads them
    (empty models: every active model of the users, an incremental run, D22)."""

    users: list[int]
    models: list[int]


def rebuild_scope(pending: Pending, state: dict) -> RebuildScope | None:
    """The run for ``pending`` in the current ``state``: the created or edited models that are now
    active (a model switched off keeps its rows: nothing to write), and every active model of the
    users whose settings changed. None when nothing is to be rewritten."""
    models = state.get("m", {})
    active = {int(k): e for k, e in models.items() if e[1] == 1}
    edited = sorted(m for m in pending.models if m in active)
    users = sorted(pending.users)
    if not edited and not users:
        return None
    if not edited:
        return RebuildScope(users=users, models=[])
    owners = {active[m][0] for m in edited}
    of_users = {m for m, e in active.items() if e[0] in set(users)}
    return RebuildScope(users=sorted(owners | set(users)), models=sorted(set(edited) | of_users))
