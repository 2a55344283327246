"""Child process of the benchmark: the ``attribution`` command line, then this process's peak RSS.

    python -m bench.cli_peak rebuild --start ... --end ...

Runs exactly what ``.venv/bin/attribution`` runs (the console script calls
``attribution_pipeline.cli:main`` with the same arguments), in this process, so the parent's wall
time covers the whole command (interpreter start-up, imports, Dagster start-up, the run) and the
peak RSS is the command's own ``VmHWM``: ``wait4``'s ``ru_maxrss`` would include the parent's RSS
at fork, which Linux carries into the child across ``exec``. The command's own output comes first;
the last line of stdout is one JSON object: ``{"exit_code": ..., "vmhwm_mib": ...}``.

Exit code: the command's, except that 2 (committed, but some models skipped or groups held back:
``cli/outcome.py``) exits 0 so the parent can still read the figures; the JSON line keeps the 2.
"""

import json
import sys

from bench.peak import own_peak_mib


def main() -> int:
    from attribution_pipeline.cli import main as attribution

    code = attribution(sys.argv[1:])
    sys.stdout.flush()
    print(json.dumps({"exit_code": code, "vmhwm_mib": own_peak_mib()}), flush=True)
    return 0 if code in (0, 2) else code


if __name__ == "__main__":
    sys.exit(main())
