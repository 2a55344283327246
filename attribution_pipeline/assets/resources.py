"""The per-run resource: what one run covers beyond its hours.

The other resources are plain objects built from the settings in ``definitions.py``: ``db``
(:class:`~attribution_pipeline.storage.database.Database`), ``settings``
(:class:`~attribution_pipeline.settings.Settings`), ``alerts``
(:class:`~attribution_pipeline.automation.alerts.Alerter`) and the frames IO manager. They have no
config schema, so nothing secret reaches Dagster's run config or snapshots.
"""

import dagster as dg


class RunScope(dg.ConfigurableResource):
    """What one run covers beyond its hours (CLI ``--user``/``--model``/``--dry-run``).

    Empty lists mean every non-deleted user and every active model. A dry run computes everything,
    compares it with the stored rows and writes nothing (D20).
    """

    users: list[int] = []
    models: list[int] = []
    dry_run: bool = False
    report_path: str = ""  # where the run writes its report (JSON); default under the reports folder

    @property
    def is_full(self) -> bool:
        return not self.users and not self.models and not self.dry_run
