"""``KILL CONNECTION`` for the connections of one test database, from root connections of its own.

Two ways to pick the victim:

* :meth:`ConnectionKiller.watch` starts a thread that polls ``information_schema.PROCESSLIST``
  for a statement of the database whose text matches a ``LIKE`` pattern (``LOAD DATA%``, a
  ``SELECT`` on ``202_clicks``...) and kills its connection, once or ``times`` times. Polling
  sees statements that last a few milliseconds (a ``LOAD DATA LOCAL`` sending its file). A
  statement that may be over before a poll sees it can be held at a *gate*: the watch takes
  ``LOCK TABLES <gate> WRITE`` first, so statements on that table wait for the lock (and are seen)
  until the kills are done; a gate suits a table the run only reads (``202_clicks``);
* :meth:`ConnectionKiller.kill` kills a connection by its id: ``TcpProxy.on_statement`` hands over
  the id of the connection that is sending a statement, before the server receives it.

Every kill is recorded in :attr:`ConnectionKiller.killed` (thread id, statement, what found it).
"""

import threading
import time
from dataclasses import dataclass, field

import pymysql
from sqlalchemy.engine import make_url


def server_connect(url: str, *, database: bool = False) -> pymysql.connections.Connection:
    """A PyMySQL connection to ``url``'s server (as ``url``'s user), autocommit."""
    u = make_url(url)
    return pymysql.connect(host=u.host or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
                           password=u.password or "", database=u.database if database else None,
                           autocommit=True, connect_timeout=5)


@dataclass
class Kill:
    thread_id: int
    statement: str
    by: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Watch:
    """A polling thread looking for ``pattern``; see :meth:`ConnectionKiller.watch`."""

    name: str
    pattern: str
    times: int
    gate: str | None = None
    kills: list[Kill] = field(default_factory=list)
    polls: int = 0
    error: str | None = None
    thread: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)  # polling (and the gate taken)

    @property
    def done(self) -> bool:
        return len(self.kills) >= self.times


class ConnectionKiller:
    """Kills connections of ``url``'s database (the server is reached directly, never via a proxy)."""

    def __init__(self, url: str, *, poll_interval: float = 0.002):
        self.url = url
        self.database = make_url(url).database
        self.poll_interval = poll_interval
        self.killed: list[Kill] = []
        self.watches: list[Watch] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn = None

    def __enter__(self) -> "ConnectionKiller":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def kill(self, thread_id: int | None, *, statement: str = "", by: str = "id") -> bool:
        """``KILL CONNECTION thread_id``; False if there was no such connection any more."""
        if thread_id is None:
            return False
        with self._lock:
            if self._conn is None:
                self._conn = server_connect(self.url)
            try:
                with self._conn.cursor() as cur:
                    cur.execute("KILL CONNECTION %s", (int(thread_id),))
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] == 1094:  # unknown thread id: it ended meanwhile
                    return False
                raise
            self.killed.append(Kill(int(thread_id), statement, by))
        return True

    def watch(self, pattern: str, *, times: int = 1, name: str | None = None, gate: str | None = None) -> Watch:
        """Kill the connection running a statement of the database ``LIKE pattern``, ``times`` times
        (a connection once: the next kill waits for another connection); with ``gate``, statements
        on that table wait until the kills are done (see the module docstring)."""
        watch = Watch(name or pattern, pattern, times, gate)
        watch.thread = threading.Thread(target=self._poll, args=(watch,), daemon=True, name=f"killer-{watch.name}")
        self.watches.append(watch)
        watch.thread.start()
        watch.ready.wait(timeout=30)
        return watch

    def stop(self) -> None:
        self._stop.set()
        for watch in self.watches:
            if watch.thread is not None:
                watch.thread.join(timeout=5)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _poll(self, watch: Watch) -> None:
        conn = server_connect(self.url)
        gate = None
        victims: set[int] = set()
        try:
            if watch.gate:
                gate = server_connect(self.url, database=True)
                with gate.cursor() as cur:
                    cur.execute(f"LOCK TABLES `{watch.gate}` WRITE")
            watch.ready.set()
            with conn.cursor() as cur:
                while not self._stop.is_set() and not watch.done:
                    cur.execute(
                        "SELECT ID, INFO FROM information_schema.PROCESSLIST "
                        "WHERE DB = %s AND ID <> CONNECTION_ID() AND INFO LIKE %s",
                        (self.database, watch.pattern),
                    )
                    watch.polls += 1
                    for thread_id, info in cur.fetchall():
                        if thread_id in victims:
                            continue
                        victims.add(thread_id)
                        try:
                            cur.execute("KILL CONNECTION %s", (int(thread_id),))
                        except pymysql.err.OperationalError as exc:
                            if exc.args and exc.args[0] == 1094:  # it ended between the two statements
                                continue
                            raise
                        kill = Kill(int(thread_id), (info or "")[:200], f"watch {watch.name}")
                        watch.kills.append(kill)
                        with self._lock:
                            self.killed.append(kill)
                        break
                    time.sleep(self.poll_interval)
        except Exception as exc:  # noqa: BLE001 - reported by the test through watch.error
            watch.error = f"{type(exc).__name__}: {exc}"
        finally:
            watch.ready.set()
            if gate is not None:
                with gate.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
                gate.close()
            conn.close()
