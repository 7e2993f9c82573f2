"""opencode's `/global/event` stream: followed while opencode is up, and read (which directory an
event is about, and what it says)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import structlog

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.opencode.client import OpencodeClient, OpencodeError
from sidecar.opencode.handle import OpencodeHandle, Sleep

log = structlog.get_logger("sidecar.apply")

RECONNECT_PAUSE = 0.2  # seconds between a stream that ended and the next one


async def follow_events(
    client: OpencodeClient, opencode: OpencodeHandle, on_event: Callable[[dict[str, Any]], None], sleep: Sleep
) -> None:
    """Hand every event to `on_event`, reconnecting whenever the stream ends, until cancelled."""
    while True:
        await opencode.wait_healthy()
        try:
            async for event in client.global_events():
                on_event(event)
        except (OpencodeError, httpx.HTTPError) as exc:
            log.debug("opencode.events_reconnect", error=str(exc) or type(exc).__name__)
        await sleep(RECONNECT_PAUSE)


def event_directory_and_type(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """`/global/event` wraps each directory's event as `{"directory": D, "payload": {"type": ...}}`."""
    directory = event.get("directory")
    # Only real project paths: opencode also tags events with markers such as "global".
    try:
        directory = check_directory(directory)
    except InvalidDirectory:
        directory = None
    payload = event.get("payload")
    kind = payload.get("type") if isinstance(payload, dict) else event.get("type")
    return directory, kind if isinstance(kind, str) else None


def is_abort(event: dict[str, Any]) -> bool:
    """A prompt was aborted (`session.error` with MessageAbortedError)."""
    payload = event.get("payload")
    properties = payload.get("properties") if isinstance(payload, dict) else None
    error = properties.get("error") if isinstance(properties, dict) else None
    return isinstance(error, dict) and error.get("name") == "MessageAbortedError"


def event_session(event: dict[str, Any]) -> str | None:
    """The session an event is about (`properties.sessionID`), if any."""
    payload = event.get("payload")
    properties = payload.get("properties") if isinstance(payload, dict) else None
    session = properties.get("sessionID") if isinstance(properties, dict) else None
    return session if isinstance(session, str) else None
