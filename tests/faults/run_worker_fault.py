"""A fault for runs launched by a Dagster daemon in processes the test does not start itself.

:func:`install_dir` writes a ``sitecustomize.py`` into a folder; put that folder on ``PYTHONPATH``
of the code server and every process it starts (the run workers) imports it at startup. Once
``attribution_pipeline.assets.writeback_run`` is imported, ``WritebackRun.run_chunk`` of a chunk
holding ``hour`` raises ``InjectedWritebackFault`` (before anything of the chunk is written) if the
marker file still exists, and removes it: exactly one run, whichever reaches it first, fails once;
its re-execution (a run retry) and every other run go through.
"""

import sys
from pathlib import Path

from import_patch import patch_on_import, sitecustomize_dir

TARGET = "attribution_pipeline.assets.writeback_run"


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


def install(hour: int, marker: str) -> None:
    patch_on_import(TARGET, lambda module: patch(module, hour, Path(marker)))


def install_dir(folder: Path, hour: int, marker: Path) -> Path:
    """``folder`` holding a ``sitecustomize.py`` that installs the fault (and the marker file)."""
    marker.write_text("fail once\n")
    return sitecustomize_dir(folder, "faults.run_worker_fault", f"install({int(hour)}, {str(marker)!r})")


__all__ = ["InjectedWritebackFault", "install", "install_dir"]
