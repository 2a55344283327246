"""Run a benchmark child and measure it from the parent."""

import os
import subprocess
import tempfile
import threading
import time


def measured(cmd, env=None, stdin_path=None, stdout_path=None):
    """Run ``cmd``; return (wall seconds, peak RSS MiB, stdout text)."""
    out_file = open(stdout_path, "w+") if stdout_path else tempfile.TemporaryFile("w+")
    stdin = open(stdin_path) if stdin_path else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=out_file, stderr=subprocess.PIPE, text=True)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()))
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_file.seek(0)
    text = out_file.read() if not stdout_path else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {errors[0][-3000:] if errors else ''}")
    return wall, usage.ru_maxrss / 1024, text
