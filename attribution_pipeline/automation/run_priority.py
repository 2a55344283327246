"""Run priorities (the ``dagster/priority`` run tag) of every kind of run the pipeline launches (D29).

The queued run coordinator of the production instance (``deploy/dagster.yaml``) starts queued runs
highest priority first when a slot frees up. The hourly schedule's run comes first (it keeps the
dashboard fresh); an export requested from the dashboard next (small, and a person is waiting);
rebuilds and cleanups after a model or settings change then; backfill ranges last (Dagster's
default, 0).
"""

PRIORITY_TAG = "dagster/priority"

#: Priority of each kind of run, highest first.
PRIORITIES = {"schedule": 10, "export": 5, "model_change": 3, "model_cleanup": 3, "backfill": 0}


def priority_tags(kind: str) -> dict[str, str]:
    """The ``dagster/priority`` tag of a run of ``kind`` (a key of :data:`PRIORITIES`)."""
    return {PRIORITY_TAG: str(PRIORITIES[kind])}
