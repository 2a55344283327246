"""A fault for runs launched by a Dagster daemon in processes the test does not start itself.

:func:`install_dir` writes a ``sitecustomize.py`` into a folder; put that folder on ``PYTHONPATH``
of the code server and every process it starts (the run workers) imports it at startup. Once
``attribution_pipeline.assets.writeback_run`` is imported, ``WritebackRun.run_chunk`` of a chunk
holding ``hour`` raises ``InjectedWritebackFault`` (before anything of the chunk is written) if the
marker file still exists, and removes it: exactly one run, whichever reaches it first, fails once;
its re-execution (a run retry) and every other run go through.
"""

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

TARGET = "attribution_pipeline.assets.writeback_run"
TESTS = Path(__file__).resolve().parents[1]


class InjectedWritebackFault(RuntimeError):
    """The fault this module injects (named in the failed run's error)."""


def patch(module, hour: int, marker: Path) -> None:
    original = module.WritebackRun.run_chunk

    def run_chunk(self, chunk, read):
        if hour in tuple(chunk):
            try:
                marker.unlink()  # the first to remove it fails; later attempts find it gone
            except FileNotFoundError:
                pass
            else:
                sys.stderr.write(f"FAULT writeback {hour}: raising once\n")
                raise InjectedWritebackFault(f"injected write-back fault at hour {hour}")
        return original(self, chunk, read)

    module.WritebackRun.run_chunk = run_chunk


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, hour: int, marker: Path):
        self.hour, self.marker = hour, marker

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            patch(module, self.hour, self.marker)

        spec.loader.exec_module = exec_module
        return spec


def install(hour: int, marker: str) -> None:
    sys.meta_path.insert(0, _PatchOnImport(hour, Path(marker)))


def install_dir(folder: Path, hour: int, marker: Path) -> Path:
    """``folder`` holding a ``sitecustomize.py`` that installs the fault (and the marker file)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("fail once\n")
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from faults.run_worker_fault import install\n"
        f"install({int(hour)}, {str(marker)!r})\n"
        "sys.path.remove(" + repr(str(TESTS)) + ")\n"
    )
    return folder


__all__ = ["InjectedWritebackFault", "install", "install_dir"]
