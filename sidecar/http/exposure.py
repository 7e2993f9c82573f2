"""Who may reach the sidecar, decided from strings alone (the ASGI guards in guards.py ask here).

opencode runs shell commands for whoever reaches it, so: beyond loopback the sidecar needs a key,
and on loopback a web page in the user's browser must not reach it either, by DNS rebinding (a
foreign `Host`) or by sending a request from its own site (a foreign `Origin`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost"})
DEFAULT_PORTS = {"http": 80, "https": 443}
HOSTS_SETTING = "SIDECAR_ALLOWED_HOSTS"
ORIGINS_SETTING = "SIDECAR_ALLOWED_ORIGINS"

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
# What a refusal quotes of a client's header: enough to recognise, never a page of it.
_QUOTED = 100


class BadAddress(ValueError):
    """Not a host name, an address or an origin; the message is safe to show."""


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (also as ::ffff:127.x): only this machine reaches it."""
    host = host.lower().removeprefix("[").removesuffix("]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def reachable_origin(listen_host: str, port: int) -> str:
    """`http://HOST:PORT` at which a process beside the sidecar (its child, or another container of
    its pod) reaches it: loopback for a wildcard address, else the one address it listens on."""
    host = listen_host.lower().removeprefix("[").removesuffix("]")
    if host in ("", "0.0.0.0", "localhost"):
        host = "127.0.0.1"
    elif host == "::":
        # ::1 reaches `::` even where it is bound IPv6-only (net.ipv6.bindv6only=1); 127.0.0.1 might not.
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def split_host(value: str) -> tuple[str, int | None]:
    """A `Host` header's `name[:port]` (IPv6 in brackets) as a lowercase host without brackets and
    a port; anything else (a bare IPv6 address, a path, spaces) raises BadAddress."""
    value = value.lower()
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise BadAddress("not an IPv6 address in brackets") from None
        if not bracket:
            raise BadAddress("not an IPv6 address in brackets")
    else:
        host = value.partition(":")[0]
        rest = value[len(host) :]
        if not _NAME.fullmatch(host):
            raise BadAddress("not a host name or address")
    if not rest:
        return host, None
    port = rest.removeprefix(":")
    if not rest.startswith(":") or not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 < int(port) < 65536:
        raise BadAddress("not a port")
    return host, int(port)


def normal_host(value: str) -> str:
    """One entry of SIDECAR_ALLOWED_HOSTS: a host name or address; every port of it is allowed."""
    value = value.strip()
    try:
        host, port = split_host(value)
    except BadAddress as exc:
        raise BadAddress(f"{value!r}: {exc}") from None
    if port is not None:
        raise BadAddress(f"{value!r}: list the host without a port (every port of it is allowed)")
    return host


def split_origin(value: str) -> tuple[str, str, int]:
    """`scheme://host[:port]` as (scheme, host, port), the scheme's default port filled in."""
    scheme, sep, rest = value.lower().partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise BadAddress("not an origin (scheme://host[:port])")
    host, port = split_host(rest)
    if port is None:
        if scheme not in DEFAULT_PORTS:
            raise BadAddress(f"not an origin: {scheme} has no default port")
        port = DEFAULT_PORTS[scheme]
    return scheme, host, port


def normal_origin(value: str) -> str:
    """One entry of SIDECAR_ALLOWED_ORIGINS, spelled as a browser sends it."""
    value = value.strip()
    if value.lower() == "null":
        # Any page can send `Origin: null` (a sandboxed iframe, a data: URL): allowing it allows all.
        raise BadAddress("'null' cannot be allowed: any web page can send it")
    try:
        scheme, host, port = split_origin(value)
    except BadAddress as exc:
        raise BadAddress(f"{value!r}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if DEFAULT_PORTS.get(scheme) == port else f"{scheme}://{shown}:{port}"


def same_origin(origin: str, host_header: str) -> bool:
    """The page that sent the request came from the host it sent it to (the scheme is the page's:
    behind a TLS proxy the sidecar itself sees plain HTTP)."""
    try:
        scheme, host, port = split_origin(origin)
        to_host, to_port = split_host(host_header)
    except BadAddress:
        return False
    return (host, port) == (to_host, to_port if to_port is not None else DEFAULT_PORTS.get(scheme))


@functools.lru_cache(maxsize=256)
def _checked_host(host_header: str) -> tuple[str, bool] | None:
    """A Host header's host and whether it is loopback, or None if it is no host. Remembered: every
    request asks, nearly always with the same header, and parsing it (ipaddress) was 3% of the
    gateway hop's CPU (py-spy, bench/custody.py)."""
    try:
        host, _ = split_host(host_header)
    except BadAddress:
        return None
    return host, is_loopback(host)


@dataclass(frozen=True)
class BrowserPolicy:
    """Which `Host` and `Origin` a request may carry. The Host is checked while the sidecar listens
    on loopback (or hosts are listed); the Origin everywhere, since a browser that holds the key (a
    cached Basic login) sends it with a forged request from any site too."""

    check_host: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()

    @classmethod
    def for_listen(
        cls, listen_host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()
    ) -> BrowserPolicy:
        hosts = frozenset(normal_host(h) for h in allowed_hosts)
        return cls(
            check_host=is_loopback(listen_host) or bool(hosts),
            allowed_hosts=hosts,
            allowed_origins=frozenset(normal_origin(o) for o in allowed_origins),
        )

    def refusal(self, hosts: Sequence[str], origins: Sequence[str]) -> str | None:
        """Why a request with these `Host` and `Origin` headers is refused, or None to let it in.
        A request without `Origin` is not a browser's cross-site one; `Origin: null` is refused."""
        host = hosts[0] if len(hosts) == 1 else None
        if self.check_host and (host is None or not self._host_allowed(host)):
            shown = _quote(host) if host is not None else f"{len(hosts)} Host headers"
            return (
                f"Host {shown} is not this sidecar's: it listens on loopback, where a foreign name is "
                f"a web page's DNS rebinding; list the name in {HOSTS_SETTING} to allow it"
            )
        for origin in origins:
            if not (host is not None and same_origin(origin, host)) and not self._origin_listed(origin):
                return (
                    f"Origin {_quote(origin)} is not this request's own (Host {_quote(host or '')}): a page "
                    f"from another site; list the origin in {ORIGINS_SETTING} to allow it"
                )
        return None

    def _host_allowed(self, host_header: str) -> bool:
        checked = _checked_host(host_header)
        if checked is None:
            return False
        host, loopback = checked
        return loopback or host in self.allowed_hosts

    def _origin_listed(self, origin: str) -> bool:
        try:
            return normal_origin(origin) in self.allowed_origins
        except BadAddress:
            return False


def _quote(value: str) -> str:
    return repr(value if len(value) <= _QUOTED else value[:_QUOTED] + "...")
