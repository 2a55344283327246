"""Test harness: real MariaDB/MySQL databases created and dropped by the tests themselves.

Each test that asks for ``mysql_url`` gets a brand-new database (``attrtest_<session>_<n>``) with
Prosper202's schema, dropped afterwards; nothing the tests did not create is ever touched.
The server comes from ``ATTRIBUTION_TEST_MYSQL_URL`` (default: root on 127.0.0.1:3306). If it
cannot be reached the MySQL tests fail with instructions; they are never skipped.
"""

import itertools
import os
import secrets

import pymysql
import pytest
from sqlalchemy.engine import make_url

from attribution_pipeline.storage import database
from attribution_pipeline.storage import tables

SERVER_URL = os.environ.get("ATTRIBUTION_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
SESSION_PREFIX = f"attrtest_{secrets.token_hex(3)}"
_counter = itertools.count(1)

HOW_TO_GET_MYSQL = (
    "These tests need a real MariaDB/MySQL server. Start the local one with\n"
    "    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd\n"
    "(or `bash .ci/run`, which starts it), or point ATTRIBUTION_TEST_MYSQL_URL at a server where\n"
    "the user may CREATE and DROP databases, e.g. mysql+pymysql://root@127.0.0.1:3306/test"
)


def _server_connect():
    url = make_url(SERVER_URL)
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        autocommit=True,
        connect_timeout=5,
    )


@pytest.fixture(scope="session")
def mysql_server():
    try:
        conn = _server_connect()
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB/MySQL is not reachable at {database.safe_url(SERVER_URL)}: {exc}\n{HOW_TO_GET_MYSQL}")
    server = _Server(conn)
    yield server
    with server.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE %s", (SESSION_PREFIX + "%",))
        for (name,) in cur.fetchall():
            cur.execute(f"DROP DATABASE `{name}`")  # name comes from SHOW DATABASES, not user input
    server.close()


class _Server:
    """The session's server connection, reconnected before each use if the server closed it: a
    session of half an hour can lose its idle connection while the server itself stays up, and
    every later test would then fail at setup."""

    def __init__(self, conn):
        self._conn = conn

    def cursor(self):
        try:
            self._conn.ping(reconnect=False)
        except pymysql.MySQLError:
            self._conn = _server_connect()
        return self._conn.cursor()

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _new_database(server) -> str:
    name = f"{SESSION_PREFIX}_{next(_counter)}"
    with server.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def mysql_url(mysql_server):
    """A fresh MariaDB database with Prosper202's tables; dropped after the test."""
    url = _new_database(mysql_server)
    engine = database.make_engine(url)
    tables.create_missing(engine)
    engine.dispose()
    yield url
    with mysql_server.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


@pytest.fixture
def mysql_url_empty(mysql_server):
    """A fresh, empty MariaDB database (no tables); dropped after the test."""
    url = _new_database(mysql_server)
    yield url
    with mysql_server.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


@pytest.fixture
def sqlite_url(tmp_path):
    """A fresh SQLite database file with Prosper202's tables."""
    url = f"sqlite:///{tmp_path / 'prosper202.sqlite'}"
    engine = database.make_engine(url)
    tables.create_missing(engine)
    engine.dispose()
    return url


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Every test gets its own ATTRIBUTION_HOME; ATTRIBUTION_DB_URL never leaks between tests."""
    home = tmp_path / "attribution_home"
    monkeypatch.setenv("ATTRIBUTION_HOME", str(home))
    monkeypatch.delenv("ATTRIBUTION_DB_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return home


#: Test modules that take minutes (a webserver and daemon, real backfills, killed processes):
#: collected first, so that with ``pytest -n 2`` one worker starts them while the other takes
#: everything else, instead of one of them starting last and running alone.
LONG_FIRST = ("test_faults.py", "test_deployment.py", "test_backfill_ui.py")
#: The demo's wall time is what its test asserts (under a minute), so it runs last, beside the
#: suite's light tail rather than beside the multi-process tests above.
LAST = ("test_demo.py",)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        if name in LONG_FIRST:
            return LONG_FIRST.index(name)
        return len(LONG_FIRST) + (name in LAST)

    items.sort(key=rank)  # stable: the order within each group is kept
