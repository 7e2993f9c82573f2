"""opencode's terminal as its web app drives it: a pty made with `POST /pty`, then a WebSocket on
`/pty/{id}/connect` carrying keystrokes one way and the screen's bytes the other."""

from __future__ import annotations

import time
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def create_pty(client: httpx.Client, directory: str) -> str:
    answer = client.post("/pty", params={"directory": directory}, json={"command": "/bin/sh", "title": "test"})
    answer.raise_for_status()
    return answer.json()["id"]


def pty_ids(client: httpx.Client, directory: str) -> set[str]:
    answer = client.get("/pty", params={"directory": directory})
    answer.raise_for_status()
    return {pty["id"] for pty in answer.json()}


def ws_url(http_url: str, path: str) -> str:
    return "ws" + http_url.removeprefix("http") + path


def open_terminal(base: str, pty_id: str, directory: str, headers: dict[str, str] | None = None, **kwargs: Any) -> ClientConnection:
    url = ws_url(base, f"/pty/{pty_id}/connect?directory={directory}&cursor=-1")
    return connect(url, additional_headers=headers or {}, proxy=None, open_timeout=10, **kwargs)


def echoed(ws: ClientConnection, word: str) -> str:
    """Type `echo word` and read until the word shows twice: the line the shell echoes as typed,
    and its output (which may follow the next prompt, as a shell prints them)."""
    ws.send(f"echo {word}\n")
    return read_until(ws, f"{word}\r\n", times=2)


def screen_text(message: str | bytes) -> str:
    """What a message puts on screen: opencode's binary messages that start with 0 are its own
    metadata (the cursor), not output."""
    if isinstance(message, bytes):
        return "" if message[:1] == b"\x00" else message.decode("utf-8", "replace")
    return message


def read_until(ws: ClientConnection, wanted: str, timeout: float = 15.0, *, times: int = 1) -> str:
    """The terminal's output until `wanted` shows `times` times (AssertionError with what came,
    otherwise)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while seen.count(wanted) < times:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{wanted!r} did not show in {timeout} s; the terminal showed {seen[-500:]!r}")
        try:
            seen += screen_text(ws.recv(timeout=left))
        except TimeoutError:
            continue
        except ConnectionClosed as exc:
            raise AssertionError(f"the terminal closed ({exc}) before {wanted!r} showed; it showed {seen[-500:]!r}") from None
    return seen
