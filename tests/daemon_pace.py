"""The Dagster daemon of a test polls every few seconds instead of every 30.

Dagster's backfill daemon looks at its backfills once every ``DEFAULT_DAEMON_INTERVAL_SECONDS`` of
``dagster._daemon.controller`` (30 s, a module constant, not an instance setting). A test that
launches a backfill waits up to that long before the daemon first evaluates it, and up to that long
again after the last run before the backfill is marked complete: about a minute of each backfill
test spent idle. :func:`site_dir` writes a ``sitecustomize.py`` into a folder; put that folder on
the daemon process's ``PYTHONPATH`` and the constant is set to ``seconds`` as Dagster imports the
module, before any daemon loop reads it. Nothing else of the daemon changes. 5 s, not less: each
evaluation of a running 720-partition backfill costs the daemon CPU, and at 2 s the daemon used
53 s of CPU over that test against 39 s at 5 s, CPU taken from the run and from the other worker
on a 2-core machine. If Dagster drops the constant, the daemon fails to start with an error naming
this module, rather than the tests silently slowing down again.
"""

import os
from pathlib import Path

from import_patch import patch_on_import, sitecustomize_dir

TARGET = "dagster._daemon.controller"
CONSTANT = "DEFAULT_DAEMON_INTERVAL_SECONDS"


def install(seconds: float) -> None:
    def pace(module) -> None:
        if not hasattr(module, CONSTANT):
            raise AttributeError(f"{TARGET} has no {CONSTANT} any more: tests/daemon_pace.py needs updating")
        setattr(module, CONSTANT, seconds)

    patch_on_import(TARGET, pace)


def site_dir(folder: Path, seconds: float = 5) -> Path:
    """``folder`` holding a ``sitecustomize.py`` that paces the daemon at ``seconds``."""
    return sitecustomize_dir(folder, "daemon_pace", f"install({float(seconds)!r})")


def paced_pythonpath(folder: Path) -> str:
    """``PYTHONPATH`` for a daemon process (and what it starts) paced by :func:`site_dir` in ``folder``."""
    return os.pathsep.join(p for p in (str(site_dir(folder)), os.environ.get("PYTHONPATH", "")) if p)


__all__ = ["install", "paced_pythonpath", "site_dir"]
