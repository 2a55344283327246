"""The ``attribution`` command as a real subprocess: its own homes, a timeout, its run report.

Each run gets an ``ATTRIBUTION_HOME`` (frames, exports, reports) and a ``DAGSTER_HOME`` (the
Dagster instance, in ``/dev/shm`` where the machine has it: each of the run's Dagster events is a
SQLite commit, and on a virtual disk each commit waits for an fsync, which doubles a short run's
time). A run and the run that follows it share their homes, as on a real host. Every hour is its
own chunk (``ATTRIBUTION_CHUNK_HOURS=1``), so each hour is one transaction.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DRIVER = Path(__file__).with_name("driver.py")
HOUR = 3600


@dataclass
class Homes:
    """The homes a run (and the run that follows it) uses."""

    attribution: Path
    dagster: Path

    @property
    def reports(self) -> Path:
        return self.attribution / "reports"

    @property
    def exports(self) -> Path:
        return self.attribution / "exports"

    def remove(self) -> None:
        shutil.rmtree(self.dagster, ignore_errors=True)


def make_homes(base: Path, name: str) -> Homes:
    """``base/name`` as ATTRIBUTION_HOME; a fresh DAGSTER_HOME (in /dev/shm when writable) holding
    the repository's dagster.yaml. Call :meth:`Homes.remove` when done."""
    attribution = Path(base) / name
    attribution.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        dagster = Path(tempfile.mkdtemp(prefix=f"attrtest-faults-{name}-", dir=shm))
    else:
        dagster = attribution / "dagster"
        dagster.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster / "dagster.yaml")
    # create the instance's SQLite storage here, once: two runs starting at the same moment on a new
    # DAGSTER_HOME would both create its tables (alembic: "more than one head present")
    import dagster as dg

    dg.DagsterInstance.from_config(str(dagster)).dispose()
    return Homes(attribution, dagster)


def base_env(homes: Homes, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTRIBUTION_") and k != "DAGSTER_HOME"}
    env.update({
        "ATTRIBUTION_HOME": str(homes.attribution),
        "DAGSTER_HOME": str(homes.dagster),
        "ATTRIBUTION_CHUNK_HOURS": "1",
        "ATTRIBUTION_LOCK_TIMEOUT": "120",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


@cache
def report_flag(command: str) -> bool:
    """Does ``attribution <command>`` take ``--report PATH``? (Else the report is the newest file
    in ``$ATTRIBUTION_HOME/reports``.)"""
    from attribution_pipeline.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers there
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and command in choices:
            return any("--report" in a.option_strings for a in choices[command]._actions)  # noqa: SLF001
    return False


def hour_key(hour: int) -> str:
    """Dagster's partition key of an hour (``2024-06-01-09:00``)."""
    return datetime.fromtimestamp(hour, tz=timezone.utc).strftime("%Y-%m-%d-%H:%M")


def rebuild_args(url: str, first_hour: int, hours: int) -> list[str]:
    """A run that rewrites every hour (``--full``): these scenarios fault the write path itself and
    compare every row, lookback window and audit row with a clean run's, which an incremental run
    would leave as an earlier run wrote them (D22; tests/test_incremental.py covers those)."""
    return ["rebuild", "--db-url", url, "--start", str(first_hour), "--end", str(first_hour + hours * HOUR), "--full"]


class CliRun:
    """One ``attribution`` process (through the fault driver when ``fault`` is given)."""

    def __init__(self, args: list[str], homes: Homes, *, fault: tuple[str, int] | None = None,
                 name: str = "run", env: dict[str, str] | None = None):
        self.name = name
        self.homes = homes
        self.args = list(args)
        self.fault = fault
        self.report_path: Path | None = None
        if self.args and report_flag(self.args[0]):
            self.report_path = homes.reports / f"{name}-{time.time_ns()}.json"
            self.args += ["--report", str(self.report_path)]
        if fault is None:
            self.command = [str(BIN / "attribution"), *self.args]
        else:
            self.command = [sys.executable, str(DRIVER), fault[0], str(fault[1]), "--", *self.args]
        self.env = base_env(homes, **(env or {}))
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.finished = 0.0
        logs = homes.attribution / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = time.time_ns()
        self.stdout_path = logs / f"{name}-{stamp}.out"
        self.stderr_path = logs / f"{name}-{stamp}.err"

    def start(self) -> "CliRun":
        self.started = time.time()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait(self, timeout: float) -> int:
        """The exit code (negative: killed by that signal); on timeout the process group is killed
        and the test fails with the run's output."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise AssertionError(f"{self.name} did not finish in {timeout} s\n{self.describe()}") from None
        self.finished = time.time()
        return code

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def killed_by_fault(self) -> bool:
        return self.returncode == -signal.SIGKILL and f"FAULT {self.fault[0]}" in self.stderr

    def report(self) -> dict | None:
        """The run's report: ``--report``'s file, else the newest report written since it started
        (of the same hours, when another run shares the homes)."""
        if self.report_path is not None:
            return json.loads(self.report_path.read_text()) if self.report_path.exists() else None
        found = []
        for path in self.homes.reports.glob("*.json"):
            if path.stat().st_mtime < self.started - 1:
                continue
            report = json.loads(path.read_text())
            if self.hour_keys and (report.get("first_hour"), report.get("last_hour")) != self.hour_keys:
                continue
            found.append((path.stat().st_mtime, report))
        return max(found, key=lambda f: f[0])[1] if found else None

    @property
    def hour_keys(self) -> tuple[str, str] | None:
        """(first, last) hour keys of a ``rebuild --start S --end E`` with epoch seconds."""
        try:
            start = int(self.args[self.args.index("--start") + 1])
            end = int(self.args[self.args.index("--end") + 1])
        except (ValueError, IndexError):
            return None
        return hour_key(start), hour_key(end - HOUR)

    def describe(self, lines: int = 40) -> str:
        def tail(text: str) -> str:
            return "\n".join(text.splitlines()[-lines:])

        shown = " ".join(self.command[1:] if self.fault is None else self.command[2:])
        return (f"--- {self.name}: {shown}\n--- exit {self.returncode} after {self.seconds:.1f} s\n"
                f"--- stdout (tail)\n{tail(self.stdout)}\n--- stderr (tail)\n{tail(self.stderr)}")


def run(args: list[str], homes: Homes, *, timeout: float = 240, **kwargs) -> CliRun:
    """Start ``attribution args`` and wait for it."""
    cli = CliRun(args, homes, **kwargs).start()
    cli.wait(timeout)
    return cli
