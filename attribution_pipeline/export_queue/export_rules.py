"""Validation of one export request, row by row (D23; Q18): pure, no database.

Prosper202's cron hydrates every pending row into enums before it processes any, so one row with
an unknown format, scope or status crashes every run (Q18), and it never checks who owns the
model. Here each row is checked on its own; a bad row fails with a named reason (the text written
to ``last_error`` / ``error_message`` starts with the reason's code) and the others proceed.

Reasons: ``unknown_format``, ``unknown_scope``, ``scope_id_required``, ``unknown_status``,
``empty_range``, ``model_not_found``, ``model_not_owned``, ``user_not_found``, ``user_deleted``.
``scope_id`` 0 or NULL on a global export means global (Q18: PHP's v3 API stores 0, and the PHP
cron then matches no row).
"""

from collections.abc import Mapping
from dataclasses import dataclass

#: Prosper202's scope enum (the values its API and dashboard accept).
SCOPES = ("global", "campaign", "advertiser", "account", "adgroup", "landing_page", "traffic_source")
#: Requested formats accepted (lowercased, trimmed), and the file each produces (D24).
FORMATS = {"csv": "csv", "xls": "xlsx", "xlsx": "xlsx", "excel": "xlsx"}
PENDING = "pending"
REASONS = ("unknown_format", "unknown_scope", "scope_id_required", "unknown_status", "empty_range",
           "model_not_found", "model_not_owned", "user_not_found", "user_deleted")


class InvalidExport(ValueError):
    """An export request that cannot be processed: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class ExportSpec:
    """A valid export request, normalised: what the file holds and how it is written."""

    export_id: int
    user_id: int
    model_id: int
    scope_type: str
    scope_id: int | None  # None: global
    start_hour: int
    end_hour: int
    requested_format: str  # as requested, lowercased (csv, xls, xlsx, excel)
    file_kind: str  # "csv" or "xlsx"

    @property
    def is_global(self) -> bool:
        return self.scope_type == "global"

    def payload_fields(self) -> dict:
        """The fields a webhook payload describes the export with."""
        return {"export_id": self.export_id, "model_id": self.model_id, "format": self.requested_format,
                "scope_type": self.scope_type, "scope_id": self.scope_id,
                "start_hour": self.start_hour, "end_hour": self.end_hour}


def _int(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _scope(row: Mapping) -> tuple[str, int | None]:
    raw = str(row.get("scope_type") or "")
    scope = raw.strip().lower()
    if scope not in SCOPES:
        raise InvalidExport("unknown_scope", f"scope type {raw!r} is not one of {', '.join(SCOPES)}")
    scope_id = _int(row.get("scope_id"))
    if scope == "global":
        return scope, None  # NULL or 0 (or any id: a global export has no scope id)
    if not scope_id:
        raise InvalidExport("scope_id_required", f"a {scope} export needs a scope_id (it has {row.get('scope_id')!r})")
    return scope, scope_id


def _owner(row: Mapping, model_owner: int | None, user_deleted: int | None) -> None:
    user_id, model_id = _int(row.get("user_id")), _int(row.get("model_id"))
    if user_deleted is None:
        raise InvalidExport("user_not_found", f"user {user_id} does not exist in 202_users")
    if int(user_deleted) == 1:
        raise InvalidExport("user_deleted", f"user {user_id} is deleted (user_deleted = 1)")
    if model_owner is None:
        raise InvalidExport("model_not_found", f"model {model_id} does not exist in 202_attribution_models")
    if int(model_owner) != user_id:
        raise InvalidExport("model_not_owned", f"model {model_id} does not belong to user {user_id}")


def validate_export(row: Mapping, *, requested_format, model_owner: int | None,
                    user_deleted: int | None) -> ExportSpec:
    """The :class:`ExportSpec` of ``row`` (an export row read with its status as stored), or
    :class:`InvalidExport`. ``requested_format`` is the value of the schema's format column;
    ``model_owner`` the ``user_id`` of the row's model (None: no such model); ``user_deleted`` the
    row's user's ``user_deleted`` (None: no such user)."""
    status = row.get("status")
    if status != PENDING:  # 'PENDING' or 'pending ' match status='pending' in MySQL's collation
        raise InvalidExport("unknown_status", f"status {status!r} is not {PENDING!r}")
    fmt = str(requested_format or "").strip().lower()
    if fmt not in FORMATS:
        raise InvalidExport("unknown_format", f"format {requested_format!r} is not one of csv, xls, xlsx, excel")
    scope, scope_id = _scope(row)
    start, end = _int(row.get("start_hour")), _int(row.get("end_hour"))
    if start is None or end is None or start >= end:
        raise InvalidExport("empty_range", f"start_hour {row.get('start_hour')} is not before end_hour "
                            f"{row.get('end_hour')}")
    _owner(row, model_owner, user_deleted)
    return ExportSpec(export_id=int(row["export_id"]), user_id=int(row["user_id"]), model_id=int(row["model_id"]),
                      scope_type=scope, scope_id=scope_id, start_hour=start, end_hour=end,
                      requested_format=fmt, file_kind=FORMATS[fmt])
