"""A server's own error message, short and with every known secret blanked out, for our messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx

from sidecar.redact import Redactor

# The longest part of a server's error message passed on in ours.
MAX_REASON = 300


def server_reason(response: httpx.Response, secrets: Iterable[str] = ()) -> str | None:
    """The server's own error message: Anthropic's and Cursor's `{"error": {"message"}}`, OpenAI's too.

    A server may echo what it was sent, so every known secret is blanked out of it.
    """
    return reason_in(response.content, secrets)


def reason_in(content: bytes, secrets: Iterable[str] = ()) -> str | None:
    """`server_reason` of an answer's body alone (the gateway route reads answers with aiohttp)."""
    try:
        body: Any = json.loads(content)
    except (ValueError, RecursionError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message.strip():
        return None
    message = " ".join(message.split())
    message = Redactor(secrets).text(message)
    return message[:MAX_REASON] + ("..." if len(message) > MAX_REASON else "")
