"""Fault-injection harness for ``tests/test_faults.py``: real processes, a real MariaDB.

* :mod:`faults.tcp_proxy`: a TCP proxy in front of MariaDB that can cut every connection and
  refuse new ones for N seconds (an outage), or act when a statement goes through it;
* :mod:`faults.killer`: ``KILL CONNECTION`` from a root connection of its own, by thread id or
  by polling ``information_schema.PROCESSLIST`` for a statement;
* :mod:`faults.driver`: a script that installs a kill point (SIGKILL before or after the N-th
  chunk commit, during the Parquet exports, a non-transient error in the N-th chunk write) and
  then runs ``attribution`` in its own process;
* :mod:`faults.cli_runs`: the ``attribution`` command (or the driver) as a subprocess with its own
  homes, its exit code, output and run report;
* :mod:`faults.observe`: what MariaDB holds, hour by hour (rows, audit rows, named locks), and the
  verdict "old rows, new rows or a mix" for each hour.
"""
