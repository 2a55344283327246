"""A TCP proxy in front of MariaDB that can fail on demand.

The run under test gets a database URL pointing at the proxy (:meth:`TcpProxy.url`). The proxy
forwards bytes both ways, one thread per direction and connection, and can:

* :meth:`TcpProxy.pause`: an outage. It closes its listening socket and cuts every open
  connection (clients see their connection lost, then connection refused), and listens again on
  the same port after N seconds;
* :meth:`TcpProxy.on_statement`: act the moment a client sends bytes matching a pattern (a
  statement's text), before they reach the server: pause the proxy then (an outage that hits a
  run at a precise point), or hand the connection's server thread id to a callback (which can
  ``KILL CONNECTION`` it, a kill that no polling can miss). The server thread id is read from the
  server's handshake packet.

MariaDB's protocol is not encrypted here (the test server has no TLS), so statements are visible.

The proxy listens on the machine's own non-loopback address when it has one: connectorx's MySQL
driver (the Rust ``mysql`` crate, ``prefer_socket``) asks a server reached on a loopback address
for its Unix socket (``SELECT @@socket``) and reconnects through it, which would take its reads
around the proxy.
"""

import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url


def local_address() -> str:
    """This machine's non-loopback IPv4 address (the one its default route uses), else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
            address = s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    return "127.0.0.1" if address.startswith("127.") else address


# Ports below the kernel's ephemeral range (``ip_local_port_range``, 32768-60999 by default), so
# an outgoing connection (the suite opens thousands to MySQL) can never take the port between the
# moment it is chosen and the moment it is bound, or while an outage has the listener closed.
PORTS = range(20000, 32768)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, outside the ephemeral range (see ``PORTS``)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} in {PORTS.start}-{PORTS.stop - 1}")


@dataclass
class Proxied:
    """One client connection and its upstream connection."""

    client: socket.socket
    upstream: socket.socket
    thread_id: int | None = None  # the server's connection id (from its handshake)
    closed: bool = False


@dataclass
class Trigger:
    pattern: bytes
    action: object  # callable(Proxied) -> bool: forward the bytes (True) or drop them (False)
    occurrence: int = 1  # act on this occurrence of the pattern (1 = the first)
    times: int = 1  # then on this many occurrences in all
    seen: int = 0
    fired: list = field(default_factory=list)  # (monotonic time, thread id) of each action


class TcpProxy:
    """``with TcpProxy() as proxy: url = proxy.url(mysql_url)``; see the module docstring."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 3306), host: str | None = None):
        self.upstream = upstream
        self.host = host or local_address()
        self.port = free_port(self.host)
        self._lock = threading.Lock()
        self._conns: list[Proxied] = []
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._triggers: list[Trigger] = []
        self._reopen_timer: threading.Timer | None = None
        self._stopped = False
        self.accepted = 0
        self.refused_from: float | None = None
        self.pauses: list[tuple[float, float]] = []  # (start, end) monotonic times of each outage
        self.errors: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> "TcpProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for _ in range(20):
            try:
                self._listen()
                return
            except OSError:  # taken since it was chosen (another test's proxy): choose again
                self.port = free_port(self.host)
        self._listen()

    def stop(self) -> None:
        self._stopped = True
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
        self._close_listener()
        self._cut_all()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def url(self, database_url: str) -> str:
        """``database_url`` (a SQLAlchemy URL) pointing at the proxy instead of the server."""
        return make_url(database_url).set(host=self.host, port=self.port).render_as_string(hide_password=False)

    # -- faults --------------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """An outage of ``seconds``: cut every connection and refuse new ones, then listen again.
        Returns at once (the proxy reopens by itself)."""
        with self._lock:
            if self._stopped:
                return
            start = time.monotonic()
            self.pauses.append((start, start + seconds))
        self._close_listener()
        self._cut_all()
        self._reopen_timer = threading.Timer(seconds, self._reopen)
        self._reopen_timer.daemon = True
        self._reopen_timer.start()

    def is_paused(self) -> bool:
        return self._listener is None and not self._stopped

    def on_statement(self, pattern: bytes, action, *, occurrence: int = 1, times: int = 1) -> Trigger:
        """Call ``action(proxied)`` when a client sends ``pattern`` (its ``occurrence``-th time, and
        on the following ones up to ``times`` actions); the bytes are forwarded if it returns True."""
        trigger = Trigger(pattern, action, occurrence, times)
        with self._lock:
            self._triggers.append(trigger)
        return trigger

    def pause_on(self, pattern: bytes, seconds: float, *, occurrence: int = 1) -> Trigger:
        """An outage of ``seconds`` that starts when a client sends ``pattern`` (dropped)."""
        def action(_proxied):
            self.pause(seconds)
            return False

        return self.on_statement(pattern, action, occurrence=occurrence)

    # -- internals -----------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept, args=(listener,), daemon=True,
                                               name=f"proxy-accept-{self.port}")
        self._accept_thread.start()

    def _reopen(self) -> None:
        with self._lock:
            if self._stopped:
                return
        for attempt in range(50):
            try:
                self._listen()
                return
            except OSError as exc:  # still held (a closing socket): the test sees it if it stays
                if attempt == 49:
                    self.errors.append(f"reopen failed: {exc}")
                time.sleep(0.1)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

    def _cut_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for proxied in conns:
            self._close(proxied)

    @staticmethod
    def _close(proxied: Proxied) -> None:
        proxied.closed = True
        for sock in (proxied.client, proxied.upstream):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: a pause or stop
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError as exc:
                self.errors.append(f"upstream connect failed: {exc}")
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            proxied = Proxied(client, upstream)
            with self._lock:
                if self._listener is not listener:  # paused meanwhile
                    self._close(proxied)
                    continue
                self._conns.append(proxied)
                self.accepted += 1
            threading.Thread(target=self._pump_down, args=(proxied,), daemon=True).start()
            threading.Thread(target=self._pump_up, args=(proxied,), daemon=True).start()

    def _pump_down(self, proxied: Proxied) -> None:
        """Server -> client; the first packet is the handshake, which names the thread id."""
        first = True
        try:
            while True:
                data = proxied.upstream.recv(65536)
                if not data:
                    break
                if first:
                    proxied.thread_id = _handshake_thread_id(data)
                    first = False
                proxied.client.sendall(data)
        except OSError:
            pass
        self._drop(proxied)

    def _pump_up(self, proxied: Proxied) -> None:
        """Client -> server, with the statement triggers."""
        tail = b""
        try:
            while True:
                data = proxied.client.recv(65536)
                if not data:
                    break
                window = tail + data
                fresh_from = len(tail)
                tail = window[-256:]
                forward = True
                for trigger in self._matching(window, fresh_from):
                    trigger.fired.append((time.monotonic(), proxied.thread_id))
                    forward = bool(trigger.action(proxied)) and forward
                if proxied.closed:
                    return
                if forward:
                    proxied.upstream.sendall(data)
        except OSError:
            pass
        self._drop(proxied)

    def _matching(self, window: bytes, fresh_from: int) -> list[Trigger]:
        """Triggers whose pattern ends in the bytes just received (``window[fresh_from:]``)."""
        due = []
        with self._lock:
            for trigger in self._triggers:
                start = max(0, fresh_from - len(trigger.pattern) + 1)
                if window.find(trigger.pattern, start) >= 0 and len(trigger.fired) < trigger.times:
                    trigger.seen += 1
                    if trigger.seen >= trigger.occurrence:
                        due.append(trigger)
        return due

    def _drop(self, proxied: Proxied) -> None:
        with self._lock:
            if proxied in self._conns:
                self._conns.remove(proxied)
        if not proxied.closed:
            self._close(proxied)


def _handshake_thread_id(packet: bytes) -> int | None:
    """The connection id in a MySQL protocol-10 handshake: after the NUL-terminated version."""
    payload = packet[4:]
    if not payload or payload[0] != 10:
        return None
    end = payload.find(b"\x00", 1)
    if end < 0 or len(payload) < end + 5:
        return None
    return struct.unpack("<I", payload[end + 1:end + 5])[0]
