"""Who may reach the sidecar: opencode runs shell commands for whoever reaches it, so beyond
loopback only the holder of the API key may."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost"})


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
