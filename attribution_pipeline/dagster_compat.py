"""Every import of Dagster's private modules, in one place (tests/test_layout.py pins them).

Dagster 1.13's public API lacks three things the pipeline needs:

* ``AssetCheckEvaluationTargetMaterializationData``: ties a per-hour check evaluation to the
  hour's materialisation (without it the UI shows the evaluation as stale);
* ``PartitionKeyFilter`` and ``AssetCheckExecutionRecordStatus``: read the latest run-level
  evaluation of the freshness check, so the freshness sensor records only changes.

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
