"""Findings of ``attribution doctor`` and the ``source_health`` check: what was checked, how bad,
and the fix (a one-line SQL statement or a command) (D28)."""

from collections.abc import Sequence
from dataclasses import dataclass

OK, INFO, WARN, ERROR = "ok", "info", "warning", "error"
_RANK = {OK: 0, INFO: 0, WARN: 1, ERROR: 2}
#: Exit codes: healthy, errors, warnings (the CLI's 0, 1, 2 of D19).
EXIT_HEALTHY, EXIT_ERRORS, EXIT_WARNINGS = 0, 1, 2


@dataclass(frozen=True)
class Finding:
    """One result: ``name`` is stable (``index_missing:202_clicks(user_id, click_time)``)."""

    name: str
    severity: str  # OK, INFO, WARN or ERROR
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.severity}] {self.name}: {self.message}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict:
        return {"name": self.name, "severity": self.severity, "message": self.message, "fix": self.fix}


def worst(findings: Sequence[Finding]) -> str:
    """The most severe finding's severity (OK when there is none)."""
    return max((f.severity for f in findings), key=_RANK.__getitem__, default=OK)


def exit_code(findings: Sequence[Finding]) -> int:
    """0 healthy (only OK and INFO), 2 warnings, 1 errors."""
    return {OK: EXIT_HEALTHY, INFO: EXIT_HEALTHY, WARN: EXIT_WARNINGS, ERROR: EXIT_ERRORS}[worst(findings)]


def problems(findings: Sequence[Finding]) -> list[Finding]:
    """The warnings and errors, errors first."""
    return sorted((f for f in findings if _RANK[f.severity] > 0), key=lambda f: -_RANK[f.severity])
