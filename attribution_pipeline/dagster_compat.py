"""Every import of Dagster's private modules, in one place (tests/test_layout.py pins them).

Dagster 1.13's public API lacks three things the pipeline needs:

* ``AssetCheckEvaluationTargetMaterializationData``: ties a per-hour check evaluation to the
  hour's materialisation (without it the UI shows the evaluation as stale);
* ``PartitionKeyFilter`` and ``AssetCheckExecutionRecordStatus``: read the latest run-level
  evaluation of the freshness check, so the freshness sensor records only changes.

It also holds the one place the pipeline changes how Dagster behaves (:func:`plan_ranges_compactly`).

If a Dagster upgrade moves one of them, importing this module fails with the names, and the
test that imports it fails loudly, before anything else does.
"""

try:
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
except ImportError as exc:  # pragma: no cover - only when Dagster moves them
    raise ImportError(
        "attribution_pipeline.dagster_compat: a private Dagster name moved "
        f"({exc}); update the imports in this module for the installed Dagster version"
    ) from exc

__all__ = ["AssetCheckEvaluationTargetMaterializationData", "AssetCheckExecutionRecordStatus", "PartitionKeyFilter"]

#: The event log storage property Dagster reads (from ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``)
#: to store a range run's planned materialisations as one event per asset instead of one per partition.
_COMPACT_PLANS = "supports_partition_subset_in_asset_materialization_planned_events"


def plan_ranges_compactly(instance) -> bool:
    """In a throwaway (ephemeral) instance, a range run's planned materialisations are stored as one
    event per asset, as Dagster's own ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1`` does,
    instead of one per asset and hour (6,480 for 720 hours: 8-11 s at run creation). Its only cost,
    hours of a failed range run not marked failed in the partition view, does not exist for an
    instance nobody can view (it is gone when the process exits). Persistent instances are left
    as they are. Returns whether the instance plans compactly."""
    if not getattr(instance, "is_ephemeral", False):
        return False
    storage = instance.event_log_storage
    if getattr(storage, _COMPACT_PLANS, False):
        return True
    if not isinstance(getattr(type(storage), _COMPACT_PLANS, None), property):  # Dagster renamed it
        return False
    base = type(storage)
    storage.__class__ = type(f"Compact{base.__name__}", (base,), {_COMPACT_PLANS: property(lambda self: True)})
    return True
