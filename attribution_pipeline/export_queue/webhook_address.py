"""Where an export webhook may go (D25): the URL's checks, the host resolved once, every resolved
address public unless allow-listed, and HTTP(S) connections pinned to the checked addresses.

A webhook URL comes from whoever scheduled the export, so it is untrusted: without these checks
it could make the pipeline POST to the database, the cloud metadata service or anything else on
the private network (server-side request forgery). The host is resolved once per delivery and the
connection goes to an address that was checked, never to a second resolution that may answer
differently (DNS rebinding). ``ATTRIBUTION_WEBHOOK_ALLOW_HOSTS`` (``Settings.webhook_allow_hosts``)
lists the host names and CIDRs that may be reached anyway (a receiver on the same machine).
"""

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Not public although Python's ``is_global`` may say so (it varies between Python versions).
_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "240.0.0.0/4",
    "fec0::/10", "64:ff9b:1::/48", "2001::/23", "2001:db8::/32", "100::/64",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are IPv4
_KINDS = ("unspecified", "loopback", "link_local", "multicast", "private", "reserved", "site_local")


class AddressRefused(Exception):
    """The webhook's URL or one of its host's addresses may not be reached (never retried)."""


@dataclass(frozen=True)
class WebhookTarget:
    """A checked webhook URL: where to connect and what to log (no query string, no userinfo)."""

    scheme: str
    host: str
    port: int
    request_target: str  # path and query string, as sent in the request line
    safe_url: str  # scheme://host[:port]/path, for logs
    basic_auth: tuple[str, str] | None  # the URL's userinfo, sent as HTTP basic auth as cURL does

    def __repr__(self) -> str:  # the query string and userinfo may carry tokens
        return f"WebhookTarget({self.safe_url!r})"


def parse_target(url: str) -> WebhookTarget:
    """The URL's parts; :class:`AddressRefused` for anything but an http(s) URL with a host."""
    parts = urlsplit(str(url).strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused(f"URL not allowed: only http and https webhooks are sent (got {scheme or 'no'} scheme)")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise AddressRefused("URL not allowed: invalid port") from None
    if not host:
        raise AddressRefused("URL not allowed: no host")
    if any(c.isspace() or not c.isprintable() or c in "/\\?#@" for c in host):
        raise AddressRefused("URL not allowed: invalid host")
    port = port or (443 if scheme == "https" else 80)
    shown_host = f"[{host}]" if ":" in host else host
    default_port = port == (443 if scheme == "https" else 80)
    netloc = shown_host if default_port else f"{shown_host}:{port}"
    path = parts.path or "/"
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username is not None else None
    return WebhookTarget(scheme=scheme, host=host, port=port,
                         request_target=path + (f"?{parts.query}" if parts.query else ""),
                         safe_url=f"{scheme}://{netloc}{path}", basic_auth=auth)


# ------------------------------------------------------------------------------------------
# Addresses
# ------------------------------------------------------------------------------------------


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64, 6to4), if any."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_refusal(address: str | IPAddress) -> str | None:
    """Why ``address`` is not a public address (``"loopback"``, ``"private"``...), or None when
    it is public. An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged
    by that IPv4 address too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = address_refusal(embedded)
        if reason or ip.ipv4_mapped is not None or ip in _NAT64:
            return f"{reason} (embedded IPv4 {embedded})" if reason else None
    for kind in _KINDS:
        if getattr(ip, f"is_{kind}", False):
            return kind.replace("_", "-")
    if any(ip in network for network in _NOT_PUBLIC if network.version == ip.version):
        return "special-purpose"
    return None if ip.is_global else "not global"


@dataclass(frozen=True)
class AllowList:
    """``Settings.webhook_allow_hosts`` parsed: host names (lower case) and networks."""

    hosts: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "AllowList":
        hosts, networks = set(), []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = [ip] + ([_embedded_ipv4(ip)] if _embedded_ipv4(ip) is not None else [])
        return any(c in n for c in candidates for n in self.networks if n.version == c.version)


def resolve_checked(target: WebhookTarget, allow: AllowList) -> list[tuple[int, tuple]]:
    """The host's addresses as ``(family, sockaddr)``, resolved once; :class:`AddressRefused`
    unless every one is public or allow-listed (a host that answers with one private address
    among public ones is refused whole). ``socket.gaierror`` when it does not resolve."""
    found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[tuple[int, tuple]] = []
    for family, _type, _proto, _name, sockaddr in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        reason = None if allow.allows_host(target.host) or allow.allows_address(ip) else address_refusal(ip)
        if reason:
            raise AddressRefused(f"address not allowed: {target.host} resolves to {ip} ({reason}); "
                                 "list it in ATTRIBUTION_WEBHOOK_ALLOW_HOSTS to allow it")
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise AddressRefused(f"address not allowed: {target.host} has no IPv4 or IPv6 address")
    return addresses


# ------------------------------------------------------------------------------------------
# Connections pinned to the checked addresses
# ------------------------------------------------------------------------------------------


def _open(addresses: list[tuple[int, tuple]], timeout: float) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts one."""
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError("no address to connect to")


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to checked addresses; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, addresses: list[tuple[int, tuple]], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _open(self.addresses, self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to checked addresses whose TLS names (SNI) and verifies the URL's host:
    the certificate must be valid for that host, whatever address was connected to."""

    def __init__(self, host: str, port: int, addresses: list[tuple[int, tuple]], timeout: float,
                 context: ssl.SSLContext | None = None):
        self.tls = context or ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.addresses = addresses

    def connect(self) -> None:
        sock = _open(self.addresses, self.timeout)
        try:
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def connection(target: WebhookTarget, addresses: list[tuple[int, tuple]], timeout: float,
               context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """The pinned connection for ``target`` (not yet connected)."""
    if target.scheme == "https":
        return PinnedHTTPSConnection(target.host, target.port, addresses, timeout, context)
    return PinnedHTTPConnection(target.host, target.port, addresses, timeout)
