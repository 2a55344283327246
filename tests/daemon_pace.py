"""The Dagster daemon of a test polls every few seconds instead of every 30.

Dagster's backfill daemon looks at its backfills once every ``DEFAULT_DAEMON_INTERVAL_SECONDS`` of
``dagster._daemon.controller`` (30 s, a module constant, not an instance setting). A test that
launches a backfill waits up to that long before the daemon first evaluates it, and up to that long
again after the last run before the backfill is marked complete: about a minute of each backfill
test spent idle. :func:`site_dir` writes a ``sitecustomize.py`` into a folder; put that folder on
the daemon process's ``PYTHONPATH`` and the constant is set to ``seconds`` as Dagster imports the
module, before any daemon loop reads it. Nothing else of the daemon changes. 5 s, not less: each
evaluation of a running 720-partition backfill costs the daemon CPU (about 0.4 s), and at 2 s its
evaluations took 20 s of CPU during that test's run, beside the run and the other worker on a
2-core machine. If Dagster drops the constant, the daemon fails to start with an error naming
this module, rather than the tests silently slowing down again.
"""

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

TARGET = "dagster._daemon.controller"
CONSTANT = "DEFAULT_DAEMON_INTERVAL_SECONDS"
TESTS = Path(__file__).resolve().parent


class _PaceOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            if not hasattr(module, CONSTANT):
                raise AttributeError(f"{TARGET} has no {CONSTANT} any more: tests/daemon_pace.py needs updating")
            setattr(module, CONSTANT, self.seconds)

        spec.loader.exec_module = exec_module
        return spec


def install(seconds: float) -> None:
    sys.meta_path.insert(0, _PaceOnImport(seconds))


def site_dir(folder: Path, seconds: float = 5) -> Path:
    """``folder`` holding a ``sitecustomize.py`` that paces the daemon at ``seconds``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from daemon_pace import install\n"
        f"install({float(seconds)!r})\n"
        f"sys.path.remove({str(TESTS)!r})\n"
    )
    return folder


__all__ = ["install", "site_dir"]
