"""LOAD DATA LOCAL INFILE, guarded: a server gets only what the running statement was allowed to send.

PyMySQL connections of :func:`database.make_engine` are :class:`GuardedConnection` objects: when a
server asks for a local file, they answer only with the name :func:`local_file_allowed` allowed
for the running statement (the rows ``bulk_load`` gave for that name, sent from memory, or that
file); any other name gets an empty answer and :class:`LocalInfileRefusedError`, and nothing is sent.
"""

from contextlib import contextmanager

import pymysql
from pymysql.connections import Connection as PyMySQLConnection
from pymysql.connections import MySQLResult
from pymysql.protocol import LoadLocalPacketWrapper
from sqlalchemy.engine import Connection

from attribution_pipeline.errors import LocalInfileRefused

#: MySQL client error "LOAD DATA LOCAL INFILE file request rejected" (CR_LOAD_DATA_LOCAL_INFILE_REJECTED).
LOCAL_INFILE_REJECTED = 2068


class LocalInfileRefusedError(pymysql.err.OperationalError, LocalInfileRefused):
    """PyMySQL's error type (SQLAlchemy wraps it as usual) and the pipeline's named refusal."""


#: Bytes per packet of rows sent from memory (PyMySQL reads files 16 KiB at a time): at most half
#: the server's ``max_allowed_packet``, which bounds every packet it reads.
LOCAL_DATA_PACKET = 1 << 20


class _GuardedResult(MySQLResult):
    def _read_load_local_packet(self, first_packet):
        conn = self.connection
        requested = LoadLocalPacketWrapper(first_packet).filename
        allowed, conn.allowed_local_file = conn.allowed_local_file, None  # one statement, one file
        data, conn.allowed_local_data = conn.allowed_local_data, None
        if allowed is not None and requested == allowed.encode(conn.encoding):
            if data is None:
                return super()._read_load_local_packet(first_packet)
            return self._send_local_data(data)
        conn.write_packet(b"")  # an empty file: not one byte of the requested file is sent
        try:
            conn._read_packet()  # the server's answer to the empty file (OK, 0 rows, or an error)
        except pymysql.err.MySQLError:
            pass
        name = requested.decode(conn.encoding, errors="replace")
        raise LocalInfileRefusedError(
            LOCAL_INFILE_REJECTED,
            f"LOAD DATA LOCAL INFILE refused: the server asked for {name!r}, which is not the file this client "
            "generated for the statement (only bulk_load's own rows are ever sent); nothing was sent",
        )

    def _send_local_data(self, data: memoryview) -> None:
        """PyMySQL's answer to a ``LOAD DATA LOCAL`` request (the rows, an empty packet, the
        server's OK), with rows from memory in packets of up to :data:`LOCAL_DATA_PACKET` bytes."""
        conn = self.connection
        size = max(1024, min(LOCAL_DATA_PACKET, conn.server_max_packet // 2))
        try:
            for offset in range(0, len(data), size):
                conn.write_packet(bytes(data[offset:offset + size]))
        finally:
            conn.write_packet(b"")  # the end of the rows
            ok_packet = conn._read_packet()
        if not ok_packet.is_ok_packet():
            raise pymysql.err.OperationalError(2014, "Commands out of sync")
        self._read_ok_packet(ok_packet)


class GuardedConnection(PyMySQLConnection):
    """A PyMySQL connection that answers a server's ``LOAD DATA LOCAL`` request only with the file
    :func:`local_file_allowed` named for the running statement (or the rows it was given for that
    name, sent from memory), and refuses any other."""

    allowed_local_file: str | None = None
    allowed_local_data: memoryview | None = None
    _server_max_packet: int | None = None

    @property
    def server_max_packet(self) -> int:
        """The server's ``max_allowed_packet`` (read once per connection)."""
        if self._server_max_packet is None:
            cursor = self.cursor()
            try:
                cursor.execute("SELECT @@max_allowed_packet")
                self._server_max_packet = int(cursor.fetchone()[0])
            finally:
                cursor.close()
        return self._server_max_packet

    def _read_query_result(self, unbuffered=False):  # PyMySQL's, with the guarded result
        self._result = None
        result = _GuardedResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows

    def show_warnings(self):
        self._execute_command(pymysql.constants.COMMAND.COM_QUERY, "SHOW WARNINGS")
        result = _GuardedResult(self)
        result.read()
        return result.rows


@contextmanager
def local_file_allowed(conn: Connection, path: str, data: bytes | memoryview | None = None):
    """Let ``conn`` send ``path`` (exactly that name, at most once) if the server asks for it with
    ``LOAD DATA LOCAL INFILE`` during the block; with ``data``, the server gets those bytes under
    that name (no file is read or written: the rows go from memory to the socket). The allowance
    lives on the DBAPI connection, which serves one thread at a time, so concurrent writers never
    see each other's file."""
    raw = conn.connection.dbapi_connection
    if not isinstance(raw, GuardedConnection):  # other drivers: local infile is not enabled
        yield
        return
    if data is not None:
        raw.server_max_packet  # noqa: B018 - read before the statement, not inside its protocol exchange
    raw.allowed_local_file = path
    raw.allowed_local_data = None if data is None else memoryview(data)
    try:
        yield
    finally:
        raw.allowed_local_file = None
        raw.allowed_local_data = None
