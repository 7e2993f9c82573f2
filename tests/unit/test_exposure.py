"""Who may reach the sidecar: the listen address, and the Host/Origin decision table."""

from __future__ import annotations

import pytest

from sidecar.http.exposure import BadAddress, BrowserPolicy, is_loopback, normal_host, normal_origin

HOSTS = "SIDECAR_ALLOWED_HOSTS"
ORIGINS = "SIDECAR_ALLOWED_ORIGINS"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.45.6.7", True),
        ("localhost", True),
        ("LocalHost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("localhost.", False),  # a name a resolver may send to DNS
        ("localhost.example", False),
        ("my-laptop", False),
    ],
)
def test_loopback_listen_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


ON_LOOPBACK = BrowserPolicy.for_listen("127.0.0.1")
LISTED = BrowserPolicy.for_listen("127.0.0.1", ["sidecar.internal", "10.0.0.7"], ["https://app.example.com"])
BEYOND = BrowserPolicy.for_listen("0.0.0.0")
BEYOND_LISTED = BrowserPolicy.for_listen("0.0.0.0", ["sidecar.ns.svc"])


@pytest.mark.parametrize(
    ("policy", "hosts", "origins", "refused_by"),
    [
        # Loopback: its names and addresses, any port.
        (ON_LOOPBACK, ["127.0.0.1:4097"], [], None),
        (ON_LOOPBACK, ["127.9.9.9"], [], None),
        (ON_LOOPBACK, ["localhost"], [], None),
        (ON_LOOPBACK, ["LOCALHOST:1"], [], None),
        (ON_LOOPBACK, ["[::1]:4097"], [], None),
        (ON_LOOPBACK, ["[::ffff:127.0.0.1]"], [], None),
        # DNS rebinding and its disguises.
        (ON_LOOPBACK, ["rebind.evil.example:4097"], [], HOSTS),
        (ON_LOOPBACK, ["rebind.evil.example"], ["http://rebind.evil.example"], HOSTS),
        (ON_LOOPBACK, ["localhost."], [], HOSTS),
        (ON_LOOPBACK, ["127.0.0.1.evil.example"], [], HOSTS),
        (ON_LOOPBACK, ["localhost@evil.example"], [], HOSTS),
        (ON_LOOPBACK, ["localhost:4097/x"], [], HOSTS),
        (ON_LOOPBACK, ["::1"], [], HOSTS),  # IPv6 without brackets is no Host
        (ON_LOOPBACK, ["[::1"], [], HOSTS),
        (ON_LOOPBACK, ["127.0.0.1:0"], [], HOSTS),
        (ON_LOOPBACK, ["127.0.0.1:99999"], [], HOSTS),
        (ON_LOOPBACK, [""], [], HOSTS),
        (ON_LOOPBACK, [], [], HOSTS),
        (ON_LOOPBACK, ["127.0.0.1", "evil.example"], [], HOSTS),
        (ON_LOOPBACK, ["sidecar.internal"], [], HOSTS),
        (LISTED, ["sidecar.internal:4097"], [], None),
        (LISTED, ["Sidecar.Internal"], [], None),
        (LISTED, ["10.0.0.7:80"], [], None),
        (LISTED, ["sidecar.internal.evil.example"], [], HOSTS),
        # Beyond loopback without listed hosts, any name (the key guards); listed ones are checked.
        (BEYOND, ["sidecar.ns.svc:4097"], [], None),
        (BEYOND, [], [], None),
        (BEYOND_LISTED, ["sidecar.ns.svc:4097"], [], None),
        (BEYOND_LISTED, ["localhost:4097"], [], None),
        (BEYOND_LISTED, ["other.ns.svc"], [], HOSTS),
        # Origin: the request's own (scheme://Host, default ports filled in), or listed.
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://127.0.0.1:4097"], None),
        (ON_LOOPBACK, ["localhost:4097"], ["http://LOCALHOST:4097"], None),
        (ON_LOOPBACK, ["[::1]:4097"], ["http://[::1]:4097"], None),
        (ON_LOOPBACK, ["127.0.0.1"], ["http://127.0.0.1:80"], None),
        (BEYOND, ["sidecar.example.com"], ["https://sidecar.example.com"], None),  # TLS ends at a proxy
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://localhost:4097"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://127.0.0.1:4098"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://127.0.0.1"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://evil.example"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["null"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], [""], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["chrome-extension://abcdef"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://127.0.0.1:4097/"], ORIGINS),
        (ON_LOOPBACK, ["127.0.0.1:4097"], ["http://127.0.0.1:4097", "http://evil.example"], ORIGINS),
        (BEYOND, [], ["http://sidecar.example.com"], ORIGINS),
        (BEYOND, ["sidecar.example.com"], ["http://evil.example"], ORIGINS),
        (LISTED, ["127.0.0.1:4097"], ["https://app.example.com"], None),
        (LISTED, ["127.0.0.1:4097"], ["HTTPS://APP.example.com:443"], None),
        (LISTED, ["127.0.0.1:4097"], ["https://app.example.com:8443"], ORIGINS),
        (LISTED, ["127.0.0.1:4097"], ["http://app.example.com"], ORIGINS),
    ],
)
def test_host_and_origin_decision_table(
    policy: BrowserPolicy, hosts: list[str], origins: list[str], refused_by: str | None
) -> None:
    refusal = policy.refusal(hosts, origins)
    if refused_by is None:
        assert refusal is None
    else:
        assert refusal is not None and refused_by in refusal


def test_a_refusal_quotes_a_long_header_only_in_part() -> None:
    refusal = ON_LOOPBACK.refusal(["a" * 5000 + ".example"], [])
    assert refusal is not None and len(refusal) < 400


@pytest.mark.parametrize(
    ("entry", "normal"),
    [("Sidecar.Internal", "sidecar.internal"), (" 10.0.0.7 ", "10.0.0.7"), ("[FD00::1]", "fd00::1"), ("svc_a", "svc_a")],
)
def test_allowed_host_entries(entry: str, normal: str) -> None:
    assert normal_host(entry) == normal


@pytest.mark.parametrize("entry", ["sidecar.internal:4097", "http://sidecar.internal", "a b", "*", "", "-x.example"])
def test_bad_allowed_host_entries(entry: str) -> None:
    with pytest.raises(BadAddress):
        normal_host(entry)


@pytest.mark.parametrize(
    ("entry", "normal"),
    [
        ("HTTPS://App.Example.com:443", "https://app.example.com"),
        ("http://app.example.com:8080", "http://app.example.com:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_allowed_origin_entries(entry: str, normal: str) -> None:
    assert normal_origin(entry) == normal


@pytest.mark.parametrize(
    "entry", ["null", "NULL", "*", "app.example.com", "https://app.example.com/", "https://app.example.com/path", "ftp://x"]
)
def test_bad_allowed_origin_entries(entry: str) -> None:
    with pytest.raises(BadAddress):
        normal_origin(entry)
