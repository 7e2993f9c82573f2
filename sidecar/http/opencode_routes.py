"""opencode's routes as the pass-through must know them (opencode 1.18.33): which carry a model,
and in which form; which answer an event stream; where a request names its directory.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from starlette.requests import HTTPConnection

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.errors import HttpError
from sidecar.naming import ModelRef

# Where opencode's requests carry a model, and in which form it expects it.
MODEL_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/session/[^/]+/(message|prompt_async|shell)$"), "pair"),
    (re.compile(r"^/session/[^/]+/command$"), "string"),
    (re.compile(r"^/session/[^/]+/(init|summarize)$"), "fields"),
    (re.compile(r"^/(api/)?session$"), "id"),
    (re.compile(r"^/api/session/[^/]+/model$"), "id"),
]

# The routes that start a prompt (the session goes busy): they wait while their directory is being
# reloaded (sidecar/opencode/gate.py). Creating a session starts nothing, so it does not wait.
PROMPT_ROUTES = re.compile(r"^/session/([^/]+)/(message|prompt_async|command|shell|summarize|init)$")


def prompt_session(method: str, path: str) -> str | None:
    """The session a request starts a prompt in, or None when it starts none."""
    match = PROMPT_ROUTES.match(path) if method == "POST" else None
    return match.group(1) if match is not None else None


# opencode 1.18.33's routes that answer `text/event-stream` (measured from its `GET /doc`).
STREAM_ROUTES = re.compile(r"^/(event|global/event|api/event|api/session/[^/]+/event)$")


def wants_stream(method: str, path: str, accept: str) -> bool:
    return method == "GET" and (STREAM_ROUTES.match(path) is not None or "text/event-stream" in accept)


def model_form(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    for pattern, form in MODEL_ROUTES:
        if pattern.match(path):
            return form
    return None


def requested_model(body: dict[str, Any], form: str) -> Any:
    """The model in a request body, as the caller wrote it, or None when it names none."""
    if form == "fields":
        if body.get("modelID") is None:
            return None
        return {"providerID": body.get("providerID"), "modelID": body["modelID"]}
    return body.get("model")


def with_model(body: dict[str, Any], form: str, ref: ModelRef) -> dict[str, Any]:
    """The body with the resolved model, in the form opencode wants at that route."""
    body = dict(body)
    if form == "pair":
        body["model"] = ref.as_pair()
    elif form == "string":
        body["model"] = str(ref)
    elif form == "fields":
        body["providerID"], body["modelID"] = ref.provider_id, ref.model_id
    else:
        original = body.get("model")
        model = {"id": ref.model_id, "providerID": ref.provider_id}
        if isinstance(original, dict) and isinstance(original.get("variant"), str):
            model["variant"] = original["variant"]
        body["model"] = model
    return body


def request_directory(request: HTTPConnection, query: list[tuple[str, str]]) -> str | None:
    """The directory a request works in, as opencode 1.18.33 picks it (the first non-empty of
    `?directory=` and the percent-encoded `x-opencode-directory` header), checked and normalised;
    a bad one is refused here and never reaches opencode."""
    given = [value for key, value in query if key == "directory"]
    if len(given) > 1:
        raise HttpError(400, "directory must be given once")
    value: str | None = given[0] if given and given[0] else None
    if value is None:
        header = request.headers.get("x-opencode-directory")
        if not header:
            return None
        try:
            # Header bytes arrive as latin-1; clients percent-encode the UTF-8 path.
            value = unquote(header.encode("latin-1").decode(), errors="strict")
        except UnicodeError:
            raise HttpError(400, "x-opencode-directory must be a percent-encoded UTF-8 path") from None
    try:
        return check_directory(value)
    except InvalidDirectory as exc:
        raise HttpError(400, str(exc)) from None
