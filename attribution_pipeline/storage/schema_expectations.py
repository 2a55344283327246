"""What the pipeline expects of the database's schema: tables, columns and indexes (the QA
runbook's schema checks, the scaling note's recommended indexes), checked by ``attribution
doctor`` and the ``source_health`` check, and the missing indexes added by ``attribution init-db
--add-indexes`` (D28).

An index is there when some index of the table (or its primary key) *starts with* the expected
columns, whatever its name (installs name them differently). Missing tables and columns are
errors (the pipeline cannot run); a missing index is a warning (it runs, slowly). Indexes are
created with SQLAlchemy's ``Index(...).create`` (parameterless DDL, identifiers quoted by the
dialect), on a private copy of each table so that :mod:`~attribution_pipeline.storage.tables`,
whose ``create_missing`` mirrors Prosper202's own DDL, is unchanged.
"""

from dataclasses import dataclass

from sqlalchemy import Column, Index, Integer, MetaData, Table, inspect
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex

from attribution_pipeline.storage import tables
from attribution_pipeline.core.health_findings import ERROR, OK, WARN, Finding


@dataclass(frozen=True)
class IndexSpec:
    """An index the pipeline expects: ``columns`` lead some index of ``table``; ``init-db
    --add-indexes`` creates it as ``name`` on ``create`` (default: ``columns``)."""

    table: str
    columns: tuple[str, ...]
    name: str
    why: str
    create: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.table}({', '.join(self.columns)})"

    def index(self) -> Index:
        """The SQLAlchemy index, on a private table (not :data:`tables.metadata`)."""
        cols = self.create or self.columns
        table = Table(self.table, MetaData(), *[Column(c, Integer) for c in cols])
        return Index(self.name, *[table.c[c] for c in cols])


def _all(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns)


#: Tables and the columns the pipeline reads or writes (the runbook's list and the engine's reads).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "202_users": ("user_id", "user_deleted"),
    "202_aff_campaigns": ("aff_campaign_id", "aff_network_id"),
    "202_clicks": ("click_id", "user_id", "aff_campaign_id", "landing_page_id", "ppc_account_id", "click_cpc",
                   "click_time"),
    "202_conversion_logs": ("conv_id", "click_id", "campaign_id", "click_payout", "user_id", "click_time",
                            "conv_time", "deleted"),
    "202_conversion_touchpoints": _all(tables.conversion_touchpoints),
    "202_attribution_models": ("model_id", "user_id", "model_name", "model_slug", "model_type", "weighting_config",
                               "is_active", "is_default", "created_at", "updated_at"),
    "202_attribution_settings": ("setting_id", "user_id", "scope_type", "scope_id", "multi_touch_enabled"),
    "202_attribution_snapshots": _all(tables.attribution_snapshots),
    "202_attribution_touchpoints": _all(tables.attribution_touchpoints),
    "202_attribution_audit": _all(tables.attribution_audit),
    "202_cronjob_logs": _all(tables.cronjob_logs),
}
#: The pipeline's own table: without it every run recomputes every (user, hour) (D22).
OWN_TABLES = {"attribution_source_state": _all(tables.source_state)}

INDEXES = (
    IndexSpec("202_conversion_touchpoints", ("conv_id",), "conv_id", "journeys by conversion (runbook)"),
    IndexSpec("202_conversion_touchpoints", ("click_id",), "click_lookup", "journeys by click (runbook)"),
    IndexSpec("202_clicks", ("user_id", "click_time"), "user_click_time", "the journey and fingerprint reads"),
    IndexSpec("202_clicks", ("click_id",), "click_id", "the conversions' click join"),
    IndexSpec("202_conversion_logs", ("user_id",), "user_id", "per-user conversion reads and purges"),
    IndexSpec("202_attribution_snapshots", ("model_id", "date_hour", "scope_type", "scope_id"), "model_hour_scope",
              "the dashboard's reads (scaling note)"),
    IndexSpec("202_attribution_snapshots", ("user_id", "date_hour"), "user_hour", "the write-back's reads"),
    IndexSpec("202_attribution_snapshots", ("created_at",), "created_at_purge",
              "snapshot purges by age (scaling note: add if purges lag)"),
    IndexSpec("202_attribution_touchpoints", ("snapshot_id",), "snapshot_conv", "lookups and deletes by snapshot "
              "(scaling note)", create=("snapshot_id", "conv_id")),
    IndexSpec("202_attribution_touchpoints", ("click_id",), "click_lookup", "lookups by click (scaling note)"),
    IndexSpec("202_attribution_touchpoints", ("created_at",), "created_at_purge", "touchpoint purges by age"),
    IndexSpec("202_attribution_models", ("user_id", "is_default"), "user_default", "default-model lookups"),
    IndexSpec("attribution_source_state", ("date_hour",), "hour_lookup", "incremental runs' state reads (D22)"),
)


def _leading_columns(inspector, table: str) -> list[tuple[str, ...]]:
    """The column lists of every index of ``table``, its primary key included."""
    found = [tuple(ix.get("column_names") or ()) for ix in inspector.get_indexes(table)]
    primary = tuple(inspector.get_pk_constraint(table).get("constrained_columns") or ())
    return [cols for cols in [*found, primary] if cols]


def missing_indexes(engine: Engine) -> list[IndexSpec]:
    """The expected indexes of existing tables that no index (or primary key) starts with."""
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    missing = []
    for spec in INDEXES:
        if spec.table in existing:
            leading = _leading_columns(inspector, spec.table)
            if not any(cols[: len(spec.columns)] == spec.columns for cols in leading):
                missing.append(spec)
    return missing


def create_statement(spec: IndexSpec) -> str:
    """The one-line MySQL DDL that adds ``spec`` (shown as a finding's fix; never executed as text)."""
    return str(CreateIndex(spec.index()).compile(dialect=mysql.dialect())).strip() + ";"


def add_missing_indexes(engine: Engine) -> list[IndexSpec]:
    """Create every missing expected index (``init-db --add-indexes``); the ones created."""
    missing = missing_indexes(engine)
    for spec in missing:
        with engine.begin() as conn:
            spec.index().create(conn, checkfirst=False)
    return missing


def _column_ddl(table: str, column: str) -> str:
    defined = tables.metadata.tables.get(table)
    if defined is None or column not in defined.c:
        return f"ALTER TABLE `{table}` ADD COLUMN `{column}` ...;  (see Prosper202's DDL)"
    kind = defined.c[column].type.compile(dialect=mysql.dialect())
    return f"ALTER TABLE `{table}` ADD COLUMN `{column}` {kind};"


def schema_findings(engine: Engine) -> list[Finding]:
    """Tables, columns and indexes: one finding per problem, and one OK line per kind when none."""
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    findings: list[Finding] = []
    for table, columns in {**REQUIRED_COLUMNS, **OWN_TABLES}.items():
        if table not in existing:
            own = table in OWN_TABLES
            findings.append(Finding(f"table_missing:{table}", WARN if own else ERROR,
                                    f"table {table} is missing" + (" (every run recomputes every hour, D22)" if own else ""),
                                    "attribution init-db"))
            continue
        present = {c["name"].lower() for c in inspector.get_columns(table)}
        findings += [Finding(f"column_missing:{table}.{c}", ERROR, f"column {table}.{c} is missing",
                             _column_ddl(table, c)) for c in columns if c.lower() not in present]
    if not findings:
        findings.append(Finding("tables", OK, f"{len(REQUIRED_COLUMNS) + len(OWN_TABLES)} tables with their columns"))
    missing = missing_indexes(engine)
    findings += [Finding(f"index_missing:{spec.label}", WARN, f"no index on {spec.label}: {spec.why}",
                         f"attribution init-db --add-indexes  (or: {create_statement(spec)})") for spec in missing]
    if not missing:
        findings.append(Finding("indexes", OK, f"{len(INDEXES)} expected indexes present"))
    return findings
