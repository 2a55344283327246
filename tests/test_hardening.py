"""Hardening (issue 16): LOAD DATA LOCAL sends only bulk_load's own file, TLS reaches every
connection (or connectorx is not used), ``attribution query`` is confined and reads under the
publish lock, time arguments are bounded, connection failures are one named line, and the URL can
come from a file. Real MariaDB, real DuckDB, the real command line; no mocks."""

import fcntl
import io
import re
import ssl
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import exc, func, select, text
from sqlalchemy.engine import make_url

from attribution_pipeline.analytics.duckdb_views import connect, run_sql
from attribution_pipeline.cli import main
from attribution_pipeline.core.hours import EARLIEST_TIME, parse_time, select_hours
from attribution_pipeline.errors import (
    DatabaseConnectError,
    InvalidWindowError,
    LocalInfileRefused,
    TimeRangeError,
    TlsConfigError,
)
from attribution_pipeline.exports.layout import PUBLISH_LOCK_FILE, publish_lock, write_part
from attribution_pipeline.settings import Settings, SettingsError
from attribution_pipeline.storage import bulk, database, frame_io, local_infile, tables
from conftest import SERVER_URL

HOUR = 3600
T = 1_717_200_000  # 2024-06-01T00:00:00Z


def _scratch_table(conn) -> None:
    conn.exec_driver_sql("CREATE TABLE scratch (line VARCHAR(500))")


def _count(conn) -> int:
    return conn.exec_driver_sql("SELECT count(*) FROM scratch").scalar()


# ------------------------------------------------------------------------------------------
# 1. LOAD DATA LOCAL INFILE: only the file bulk_load generated for the statement
# ------------------------------------------------------------------------------------------


def test_load_data_local_sends_no_file_it_did_not_generate(mysql_url, tmp_path):
    outside = tmp_path / "not-generated.csv"
    outside.write_text("secret line 1\nsecret line 2\n")
    engine = database.make_engine(mysql_url)
    with engine.begin() as conn:
        _scratch_table(conn)
    for name in ("/etc/hostname", "/etc/passwd", str(outside)):
        with engine.begin() as conn:
            with pytest.raises(exc.OperationalError) as refused:
                conn.exec_driver_sql(f"LOAD DATA LOCAL INFILE '{name}' INTO TABLE scratch")  # a test literal
            assert isinstance(refused.value.orig, LocalInfileRefused)
            assert refused.value.orig.args[0] == database.LOCAL_INFILE_REJECTED
            assert f"the server asked for '{name}'" in str(refused.value) and "nothing was sent" in str(refused.value)
            assert _count(conn) == 0  # the connection stays usable and nothing arrived
    with engine.begin() as conn:
        # allowing one file does not let the server have another, and the allowance is used once
        with database.local_file_allowed(conn, "/tmp/some-other-file.csv"):
            with pytest.raises(exc.OperationalError, match="LOAD DATA LOCAL INFILE refused"):
                conn.execute(text("LOAD DATA LOCAL INFILE :p INTO TABLE scratch"), {"p": str(outside)})
        assert conn.connection.dbapi_connection.allowed_local_file is None
        # positive control: the server takes this very file when the client allows it
        with database.local_file_allowed(conn, str(outside)):
            assert conn.execute(text("LOAD DATA LOCAL INFILE :p INTO TABLE scratch"), {"p": str(outside)}).rowcount == 2
        with pytest.raises(exc.OperationalError, match="LOAD DATA LOCAL INFILE refused"):
            conn.execute(text("LOAD DATA LOCAL INFILE :p INTO TABLE scratch"), {"p": str(outside)})
        assert _count(conn) == 2
    engine.dispose()


def test_bulk_load_still_loads_its_own_files_from_concurrent_threads(mysql_url):
    engine = database.make_engine(mysql_url)
    errors: list[BaseException] = []

    def load(worker: int) -> None:
        n = 3000
        df = pl.DataFrame({"audit_id": range(worker * n + 1, worker * n + n + 1), "user_id": [worker] * n,
                           "model_id": [None] * n, "action": ["a"] * n, "metadata": [f"w{worker}"] * n,
                           "created_at": [1] * n})
        try:
            with engine.begin() as conn:
                assert bulk.bulk_load(conn, tables.attribution_audit, df, chunk_rows=700) == n
                assert conn.connection.dbapi_connection.allowed_local_file is None
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    a = tables.attribution_audit
    with engine.connect() as conn:
        counts = dict(conn.execute(select(a.c.metadata, func.count()).group_by(a.c.metadata)).all())
    assert counts == {f"w{w}": 3000 for w in range(4)}
    engine.dispose()


def test_rows_sent_from_memory_go_only_under_their_name_in_packets(mysql_url, monkeypatch, tmp_path):
    """bulk_load's rows are sent from memory under the statement's name, in packets of at most
    LOCAL_DATA_PACKET bytes (set to 64 here, so the 1 KiB floor applies: 3,000 bytes go in three
    packets), and nowhere else: no file is written, another name gets nothing, and the allowance
    is used once."""
    monkeypatch.setattr(local_infile, "LOCAL_DATA_PACKET", 64)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # any temporary file would land here
    engine = database.make_engine(mysql_url)
    data = "".join(f"line {i:04d} of memory\n" for i in range(150)).encode()
    with engine.begin() as conn:
        _scratch_table(conn)
        with database.local_file_allowed(conn, "rows-a.csv", data):
            with pytest.raises(exc.OperationalError, match="LOAD DATA LOCAL INFILE refused"):
                conn.execute(text("LOAD DATA LOCAL INFILE :p INTO TABLE scratch"), {"p": "rows-b.csv"})
        assert _count(conn) == 0
        with database.local_file_allowed(conn, "rows-a.csv", data):
            assert conn.execute(text("LOAD DATA LOCAL INFILE :p INTO TABLE scratch"), {"p": "rows-a.csv"}).rowcount == 150
            with pytest.raises(exc.OperationalError, match="LOAD DATA LOCAL INFILE refused"):  # used once
                conn.execute(text("LOAD DATA LOCAL INFILE :p INTO TABLE scratch"), {"p": "rows-a.csv"})
        lines = conn.exec_driver_sql("SELECT line FROM scratch ORDER BY line").scalars().all()
        assert lines == [f"line {i:04d} of memory" for i in range(150)]
        raw = conn.connection.dbapi_connection
        assert raw.allowed_local_file is None and raw.allowed_local_data is None
        assert raw.server_max_packet == conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar()
    # bulk_load writes no file: its batches (700 rows, many packets each) arrive whole
    n = 2000
    df = pl.DataFrame({"audit_id": range(1, n + 1), "user_id": [1] * n, "model_id": [None] * n,
                       "action": ["a,\"b\"\nc\\d"] * n, "metadata": ["NULL"] * n, "created_at": [1] * n})
    with engine.begin() as conn:
        assert bulk.bulk_load(conn, tables.attribution_audit, df, chunk_rows=700) == n
    a = tables.attribution_audit
    with engine.connect() as conn:
        got = conn.execute(select(a.c.action, a.c.metadata, a.c.model_id).distinct()).all()
    assert got == [("a,\"b\"\nc\\d", "NULL", None)]
    assert list(Path(tmp_path).iterdir()) == []
    engine.dispose()


# ------------------------------------------------------------------------------------------
# 2. TLS reaches every connection; connectorx is never given a URL without it
# ------------------------------------------------------------------------------------------

TLS_URLS = [
    "mysql+pymysql://u:pw@db:3306/p?ssl=true",
    "mysql+pymysql://u:pw@db:3306/p?ssl_ca=/etc/ssl/certs/ca-certificates.crt",
    "mysql+pymysql://u:pw@db:3306/p?ssl_ca=/ca.pem&ssl_cert=/c.pem&ssl_key=/k.pem&ssl_verify_cert=true",
    "mysql+pymysql://u:pw@db:3306/p?charset=utf8mb4&ssl_verify_identity=true",
    "mysql+pymysql://u:pw@db:3306/p?ssl_disabled=false",
    "mariadb+pymysql://u:pw@db/p?ssl_verify_cert=false",
]


@pytest.mark.parametrize("url", TLS_URLS)
def test_a_url_with_tls_never_becomes_a_connectorx_uri_without_it(url):
    with pytest.raises(TlsConfigError, match="connectorx cannot use the TLS settings"):
        frame_io.connectorx_uri(make_url(url))
    assert frame_io.uses_connectorx(make_url(url)) is False  # reads go through PyMySQL


def test_connectorx_keeps_serving_urls_without_tls():
    plain = make_url("mysql+pymysql://u:pw@db:3306/p?charset=utf8mb4")
    assert frame_io.connectorx_uri(plain) == "mysql://u:pw@db:3306/p"
    assert frame_io.connectorx_uri(make_url("mysql+pymysql://u:pw@db/p?ssl_disabled=true")) == "mysql://u:pw@db/p"
    assert frame_io.uses_connectorx(make_url("mysql+pymysql://u:pw@db/p")) is True
    assert frame_io.uses_connectorx(make_url("sqlite:///x.sqlite")) is False


def test_tls_parameters_become_one_verified_context():
    args = lambda url: database.tls_connect_args(database.tls_params(url))  # noqa: E731
    strict = args("mysql+pymysql://u@db/p?ssl=true")["ssl"]
    assert (strict.verify_mode, strict.check_hostname) == (ssl.CERT_REQUIRED, True)
    loose = args("mysql+pymysql://u@db/p?ssl_ca=/etc/ssl/certs/ca-certificates.crt&ssl_verify_cert=false")["ssl"]
    assert (loose.verify_mode, loose.check_hostname) == (ssl.CERT_NONE, False)  # "false" is false, not a string
    no_host = args("mysql+pymysql://u@db/p?ssl_ca=/etc/ssl/certs/ca-certificates.crt&ssl_check_hostname=false")["ssl"]
    assert (no_host.verify_mode, no_host.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert args("mysql+pymysql://u@db/p?ssl_disabled=false")["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert args("mysql+pymysql://u@db/p?ssl_disabled=true") == {"ssl_disabled": True}
    assert args("mysql+pymysql://u@db/p?charset=utf8mb4") == {}
    for bad, message in [("sslmode=required", "unknown TLS parameter"), ("ssl=maybe", "use true or false"),
                         ("ssl=false&ssl_ca=/x", "disables TLS"), ("ssl_ca=/does/not/exist.pem", "ssl_ca=/does/not"),
                         ("ssl_key=/k.pem", "ssl_key needs ssl_cert")]:
        with pytest.raises(TlsConfigError, match=message):
            args(f"mysql+pymysql://u@db/p?{bad}")
    shown = database.safe_url("mysql+pymysql://u:pw@db/p?ssl_cert=/c&ssl_key=/k&ssl_key_password=k3y")
    assert "k3y" not in shown and "pw" not in shown.replace("ssl_key_password", "")


def test_tls_reaches_the_pymysql_connections(mysql_url):
    # the test server has no TLS: a URL that asks for it must fail, not fall back to clear text
    engine = database.make_engine(mysql_url + "?ssl=true&ssl_verify_cert=false")
    with pytest.raises(exc.OperationalError, match="SSL is required but the server doesn't support it"):
        engine.connect()
    engine.dispose()
    with pytest.raises(DatabaseConnectError, match="TLS to .* failed: SSL is required"):
        database.preflight(mysql_url + "?ssl=true")
    database.preflight(mysql_url + "?ssl_disabled=true")  # explicitly without TLS: connects


# ------------------------------------------------------------------------------------------
# 3. attribution query: confined to the export folder, under the publish lock
# ------------------------------------------------------------------------------------------


@pytest.fixture
def exports(tmp_path) -> Path:
    root = tmp_path / "exports"
    df = pl.DataFrame({"model_name": ["last", "linear"], "attributed_revenue": [1.5, 2.5]})
    write_part(root, "snapshots", T, df)
    write_part(root, "snapshots", T + HOUR, df)
    return root


def _query(capsys, *args) -> tuple[int, str, str]:
    code = main(["query", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_query_is_confined_to_the_export_folder(exports, tmp_path, capsys):
    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\n1,2\n")
    root = str(exports)
    forbidden = [
        f"SELECT * FROM read_csv('{outside}')",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"COPY (SELECT 1) TO '{tmp_path / 'copied.csv'}'",
        f"COPY (SELECT 1) TO '{exports / 'copied.csv'}'",  # not even into the export folder
        f"SELECT 1; COPY (SELECT 1) TO '{tmp_path / 'copied.csv'}'",
        f"EXPORT DATABASE '{exports / 'dump'}'",
        f"ATTACH '{exports / 'new.duckdb'}'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "SET allowed_directories = ['/']",
    ]
    for sql in forbidden:
        code, out, err = _query(capsys, "--export-dir", root, sql)
        assert code == 1 and out == "", sql
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (sql, err)
        assert "PermissionException" in err or "InvalidInputException" in err, (sql, err)
    assert not (tmp_path / "copied.csv").exists() and not (exports / "copied.csv").exists()
    assert not (exports / "dump").exists() and not (exports / "new.duckdb").exists()
    for sql, want in [("SELECT count(*) AS n, sum(attributed_revenue) AS r FROM snapshots", "n,r\n4,8.0\n"),
                      ("DESCRIBE snapshots", "column_name"),
                      ("SET VARIABLE k = 3; SELECT getvariable('k') * 2 AS v", "v\n6\n"),
                      ("CREATE TABLE t AS SELECT model_name FROM snapshots; SELECT count(*) AS c FROM t", "c\n4\n")]:
        code, out, err = _query(capsys, "--export-dir", root, "--csv", sql)
        assert code == 0 and want in out, (sql, out, err)
    # --unrestricted: a trusted shell may read and write anywhere
    code, out, _ = _query(capsys, "--export-dir", root, "--csv", "--unrestricted",
                          f"SELECT b FROM read_csv('{outside}')")
    assert code == 0 and out == "b\n2\n"
    copy = f"COPY (SELECT 1) TO '{tmp_path / 'copied.csv'}'"
    assert _query(capsys, "--export-dir", root, "--unrestricted", copy)[0] == 0
    assert (tmp_path / "copied.csv").exists()


def test_builtin_duckdb_shell_is_confined_unless_unrestricted(exports, tmp_path, monkeypatch, capsys):
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n41\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no duckdb CLI: the built-in shell runs
    monkeypatch.delenv("ATTRIBUTION_DUCKDB_CLI", raising=False)
    session = f"SELECT a + 1 AS answer FROM read_csv('{outside}');\nSELECT count(*) AS n FROM snapshots;\n.quit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(session))
    assert main(["duckdb", "--export-dir", str(exports)]) == 0
    out = capsys.readouterr().out
    assert "error: PermissionException" in out and "42" not in out and re.search(r"│\s+4\s+│", out), out
    monkeypatch.setattr("sys.stdin", io.StringIO(session))
    assert main(["duckdb", "--export-dir", str(exports), "--unrestricted"]) == 0
    assert "42" in capsys.readouterr().out


def test_a_query_waits_for_a_publishing_writer_and_holds_the_lock_only_while_it_runs(exports):
    con = connect(exports)
    finished: list[float] = []

    def query() -> None:
        run_sql(con, "SELECT count(*) FROM snapshots")
        finished.append(time.monotonic())

    with publish_lock(exports, shared=False):  # a writer renaming an hour's files into place
        reader = threading.Thread(target=query)
        reader.start()
        time.sleep(0.6)
        assert reader.is_alive() and finished == []  # the query waits: it never sees a half-published hour
        released = time.monotonic()
    reader.join(10)
    assert finished and finished[0] >= released
    result = run_sql(con, "SELECT count(*) FROM snapshots")
    with open(exports / PUBLISH_LOCK_FILE, "a+") as fh:  # the query left no lock behind
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    write_part(exports, "snapshots", T + 2 * HOUR, pl.DataFrame({"model_name": ["x"], "attributed_revenue": [1.0]}))
    assert result.fetchall() == [(4,)]  # its rows were kept: printing them reads no file
    assert run_sql(con, "SELECT count(*) FROM snapshots").fetchall() == [(5,)]
    con.close()


# ------------------------------------------------------------------------------------------
# 4. Time arguments: bounded, named, before anything is allocated
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start, end, error", [
    ("garbage", "2024-06-01T01:00", "InvalidWindowError: cannot read time 'garbage'"),
    ("2024-06-02", "2024-06-01", "InvalidWindowError: start (1717286400) must be earlier than end"),
    ("2024-06-01", "2024-06-01", "InvalidWindowError: start"),
    ("2024-06-01T00:00", "99999999999", "TimeRangeError: end 99999999999 (5138-11-16T09:46:39Z) is outside"),
    ("-5", "2024-06-01", "TimeRangeError: start -5"),
    ("0", "2024-06-01", "TimeRangeError: start 0"),
    ("1999-12-31T23:00", "2024-06-01", "TimeRangeError: start 946681200"),
    ("2024-06-01", "99999999999999999999999999", "TimeRangeError: time 99999999999999999999..."),
    ("2024-06-01", "9999-12-31T23:59:59", "TimeRangeError: end 253402300799"),
    ("2024-13-45", "2024-06-01", "InvalidWindowError: cannot read time '2024-13-45'"),
    ("2024-06-01T00:00+99:00", "2024-06-02", "InvalidWindowError: cannot read time"),
])
def test_a_bad_time_is_one_named_line_and_exit_1(start, end, error, capsys):
    started = time.monotonic()
    code = main(["rebuild", "--db-url", "mysql+pymysql://u:pw@127.0.0.1:1/never_reached", f"--start={start}",
                 f"--end={end}"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith(f"error: {error}") and err.count("\n") == 1, err
    assert "Traceback" not in err and "pw" not in err.replace("password", "")
    assert time.monotonic() - started < 5  # refused before the database is even tried


def test_huge_windows_are_refused_before_any_hour_is_allocated():
    now = T + 10 * HOUR
    tracemalloc.start()
    try:
        for start, end in [(T, 99_999_999_999), (-10**15, T), (T, 10**18)]:
            with pytest.raises(TimeRangeError):
                select_hours(start, end, now, EARLIEST_TIME)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # bytes: no list of hours was built
    assert select_hours(T, T + 2 * HOUR, now, EARLIEST_TIME).hours == (T, T + HOUR)
    assert select_hours(now + 86_000, now + 86_400, now + 90_000, EARLIEST_TIME).hours == (now + 86_400 - 3600,)
    with pytest.raises(InvalidWindowError, match="cannot read time '--5'"):
        parse_time("--5")


# ------------------------------------------------------------------------------------------
# 5. Bad credentials, unknown databases, unreachable servers: one named line, at once
# ------------------------------------------------------------------------------------------


def _server(**parts) -> str:
    return make_url(SERVER_URL).set(**parts).render_as_string(hide_password=False)


@pytest.mark.parametrize("command", [
    ["init-db"], ["seed", "--hours", "1"], ["rebuild", "--start", "2024-06-01T00:00", "--end", "2024-06-01T01:00"],
    ["compare", "--start", "2024-06-01T00:00", "--end", "2024-06-01T01:00"],
])
def test_connection_failures_are_one_named_line_without_the_password(command, mysql_server, capsys):
    cases = [
        (_server(password="Wr0ngPassw0rd!", database="test"),
         f"error: DatabaseAccessDenied: access denied for user '{make_url(SERVER_URL).username}'"),
        (_server(database="attrtest_no_such_database"),
         "error: UnknownDatabaseError: unknown database 'attrtest_no_such_database'"),
        (_server(host="127.0.0.1", port=1, password="Wr0ngPassw0rd!", database="test"),
         "error: DatabaseUnreachable: cannot reach 127.0.0.1:1"),
        (_server(host="no-such-host.invalid", password="Wr0ngPassw0rd!", database="test"),
         "error: DatabaseUnreachable: cannot reach no-such-host.invalid:"),
    ]
    for url, line in cases:
        started = time.monotonic()
        code = main([command[0], "--db-url", url, *command[1:]])
        out, err = capsys.readouterr()
        assert code == 1, (command, url, out, err)
        assert err.startswith(line) and err.count("\n") == 1, (command, err)
        assert "Wr0ngPassw0rd" not in err + out and "Traceback" not in err
        assert time.monotonic() - started < 15  # one attempt, not the run's 90-second retry budget


# ------------------------------------------------------------------------------------------
# 6. The URL from a file: ATTRIBUTION_DB_URL_FILE and --db-url-file
# ------------------------------------------------------------------------------------------


def test_the_url_can_come_from_a_file(tmp_path, monkeypatch, capsys):
    secret = tmp_path / "db_url"
    sqlite_url = f"sqlite:///{tmp_path / 'from-file.sqlite'}"
    secret.write_text(sqlite_url + "\n")
    s = Settings.from_env({"ATTRIBUTION_HOME": str(tmp_path), "ATTRIBUTION_DB_URL_FILE": str(secret)})
    assert (s.db_url, s.db_url_file) == (sqlite_url, secret)
    with pytest.raises(SettingsError, match="both set"):
        Settings.from_env({"ATTRIBUTION_DB_URL": sqlite_url, "ATTRIBUTION_DB_URL_FILE": str(secret)})
    with pytest.raises(SettingsError, match="cannot be read"):
        Settings.from_env({"ATTRIBUTION_DB_URL_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        Settings.from_env({"ATTRIBUTION_DB_URL_FILE": str(tmp_path / "empty")})

    assert main(["init-db", "--db-url-file", str(secret)]) == 0  # the option
    assert "created" in capsys.readouterr().out and (tmp_path / "from-file.sqlite").exists()
    monkeypatch.setenv("ATTRIBUTION_DB_URL_FILE", str(secret))  # the variable
    assert main(["init-db"]) == 0
    assert "every table already exists" in capsys.readouterr().out
    monkeypatch.setenv("ATTRIBUTION_DB_URL", sqlite_url)  # both: one named line
    assert main(["init-db"]) == 1
    assert capsys.readouterr().err == ("error: SettingsError: ATTRIBUTION_DB_URL and ATTRIBUTION_DB_URL_FILE are "
                                       "both set: set only one\n")
    with pytest.raises(SystemExit) as usage:  # --db-url and --db-url-file exclude each other
        main(["init-db", "--db-url", sqlite_url, "--db-url-file", str(secret)])
    assert usage.value.code == 2


def test_a_url_file_with_a_wrong_password_never_shows_it(tmp_path, mysql_server, capsys):
    secret = tmp_path / "db_url"
    secret.write_text(_server(password="Fil3Passw0rd", database="test"))
    assert main(["init-db", "--db-url-file", str(secret)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: DatabaseAccessDenied: access denied")
    assert "Fil3Passw0rd" not in captured.err + captured.out
    assert main(["init-db", "--db-url-file", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("error: SettingsError: --db-url-file=")
