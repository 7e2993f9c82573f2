"""The fleet benchmark's simulated pods against small real servers: the followers long-poll as the
contract says (If-None-Match, a held answer released by a new version), the direct pollers ask
both lists once each and count what failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.followers import Swarm, poll_directly

KEY = "k" * 32


class _Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.version = "v1"
        self.changed = threading.Condition()
        self.held = 0
        self.seen_keys: set[str | None] = set()

    def publish(self, version: str) -> None:
        with self.changed:
            self.version = version
            self.changed.notify_all()


class _HubHandler(BaseHTTPRequestHandler):
    server: _Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen_keys.add(self.headers.get("x-api-key"))
        assert self.path == "/v1/catalogs/litellm?wait=5"
        tag = self.headers.get("If-None-Match")
        with self.server.changed:
            if tag == f'"{self.server.version}"':
                self.server.held += 1
                self.server.changed.wait_for(lambda: tag != f'"{self.server.version}"', timeout=5)
                self.server.held -= 1
            version = self.server.version
        if tag == f'"{version}"':
            self.send_response(304)
            self.send_header("ETag", f'"{version}"')
            self.end_headers()
            return
        body = b'{"models": []}'
        self.send_response(200)
        self.send_header("ETag", f'"{version}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hub() -> Iterator[_Hub]:
    server = _Hub()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.publish("closing")  # releases the held answers
    server.shutdown()
    server.server_close()


def test_every_follower_learns_each_new_version_from_its_held_request(hub: _Hub) -> None:
    url = f"http://127.0.0.1:{hub.server_address[1]}"
    swarm = Swarm(url, "litellm", KEY, 20, wait=5).start()
    try:
        assert swarm.wait_all("v1", 10)
        deadline = time.monotonic() + 10
        while hub.held < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hub.held == 20  # each asked again with the version it holds, and waits
        changed = time.monotonic()
        hub.publish("v2")
        assert swarm.wait_all("v2", 10)
        assert all(arrival >= changed for arrival in swarm.arrivals("v2"))
        assert len(swarm.arrivals("v1")) == 20 and swarm.arrivals("v3") == []
    finally:
        swarm.stop()
    assert not swarm.errors and hub.seen_keys == {KEY}


class _Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    paths: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        _Gateway.paths.append(self.path)
        assert self.headers["Authorization"] == f"Bearer {KEY}"
        # The first two /model/info answers fail: two failed polls of eight.
        status = 500 if self.path == "/model/info" and _Gateway.paths.count("/model/info") <= 2 else 200
        body = b'{"data": []}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_direct_pollers_ask_both_lists_once_each_within_the_window() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.paths = []
    try:
        started = time.monotonic()
        result = poll_directly(f"http://127.0.0.1:{server.server_address[1]}", KEY, 8, window=0.5, timeout=5)
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(_Gateway.paths) == ["/model/info"] * 8 + ["/v1/models"] * 8
    assert result.requests == 16 and len(result.seconds) == 16
    assert sum(result.errors.values()) == 2 and set(result.errors) == {"HTTP 500"}
    assert took < 5
