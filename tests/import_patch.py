"""Patch a module as it is imported, in processes a test does not start itself (a Dagster daemon,
a code server and the run workers it starts): :func:`sitecustomize_dir` writes a
``sitecustomize.py`` into a folder; put that folder on a process's ``PYTHONPATH`` and Python runs
it at startup, which installs a :class:`PatchOnImport` for the module to patch."""

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after the module ``target`` is first executed."""

    def __init__(self, target: str, patch: Callable):
        self.target, self.patch = target, patch

    def find_spec(self, name, path, target=None):
        if name != self.target:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def patch_on_import(target: str, patch: Callable) -> None:
    sys.meta_path.insert(0, PatchOnImport(target, patch))


def sitecustomize_dir(folder: Path, module: str, call: str) -> Path:
    """``folder`` holding a ``sitecustomize.py`` that imports ``install`` from ``module`` (a module
    of the tests folder, which is on ``sys.path`` only meanwhile) and runs ``call``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        f"from {module} import install\n"
        f"{call}\n"
        f"sys.path.remove({str(TESTS)!r})\n"
    )
    return folder


__all__ = ["PatchOnImport", "patch_on_import", "sitecustomize_dir"]
