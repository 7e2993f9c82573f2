"""The few calls the sidecar makes to opencode's HTTP API.

Some of opencode's answers (`/config/providers` among them) carry the gateway key resolved, so
nothing here logs a response body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import orjson

from sidecar.naming import ModelRef
from sidecar.registry import SessionsUnknown

# Sessions per page of `/experimental/session`, and pages read before giving up (the registry then
# evicts nothing: a model it cannot see unused is kept).
SESSION_PAGE = 1000
MAX_SESSION_PAGES = 100
# Seconds an idle connection to opencode is kept for the next call.
KEEPALIVE_EXPIRY = 60.0


class OpencodeError(Exception):
    """opencode answered a call in a way we can't use; the message is safe to log."""


class OpencodeClient:
    def __init__(
        self, base_url: str, password: str | None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """`password`: opencode's OPENCODE_SERVER_PASSWORD, or None for an opencode that asks none."""
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=httpx.BasicAuth("opencode", password) if password is not None else None,
            timeout=httpx.Timeout(10.0),
            # One connection kept for the health checks (every 5 s by default): httpx's expiry of
            # 5 s closed it just before each next check, and a new connection each time cost more
            # of our CPU than the check itself. opencode may close it first; httpx then opens anew.
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        try:
            response = await self._http.get("/global/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def directory(self) -> str | None:
        """opencode's own working directory (its default project), from `GET /path`."""
        response = await self._http.get("/path", timeout=5.0)
        if response.status_code != 200:
            raise OpencodeError(f"/path answered HTTP {response.status_code}")
        try:
            directory = response.json().get("directory")
        except (ValueError, AttributeError):
            raise OpencodeError("/path did not answer a JSON object") from None
        return directory if isinstance(directory, str) and directory.startswith("/") else None

    async def busy_sessions(self, directory: str) -> set[str]:
        """Sessions generating in `directory` (busy or waiting to retry)."""
        statuses = await self._get_json("/session/status", directory)
        if not isinstance(statuses, dict):
            raise OpencodeError("/session/status did not answer an object")
        return {sid for sid, status in statuses.items() if _is_busy(status)}

    async def dispose(self, directory: str) -> None:
        """Drop opencode's instance for `directory`; the next request there reloads its config."""
        response = await self._http.post("/instance/dispose", params={"directory": directory})
        if response.status_code != 200:
            raise OpencodeError(f"/instance/dispose answered HTTP {response.status_code}")

    async def provider_model_ids(self, directory: str) -> dict[str, set[str]]:
        """Per provider, the model ids opencode lists in `directory`."""
        path = "/config/providers"
        body = await self._get_body(path, directory)
        try:
            # Only the ids are decoded, each model's record skipped: at 10,000 models (6.9 MB)
            # decoding all of it took ~210 ms and left ~27 MiB resident after it was freed
            # (measured, issue 19).
            listed = msgspec.json.decode(body, type=_ProviderList)
        except msgspec.MsgspecError:
            return _model_ids(self._decode(path, body))  # any other shape, as before
        return {provider.id: set(provider.models or ()) for provider in listed.providers}

    async def session_models(self) -> set[ModelRef]:
        """The model of every session opencode keeps, in every directory, archived ones included.

        opencode 1.18.33 sets a session's `model` at its creation and at each prompt that names
        one (measured), and `/experimental/session` lists every directory's sessions, a page at a
        time (`x-next-cursor`). SessionsUnknown when it can't be read whole.
        """
        models: set[ModelRef] = set()
        params = {"archived": "true", "limit": str(SESSION_PAGE)}
        for _ in range(MAX_SESSION_PAGES):
            try:
                response = await self._http.get("/experimental/session", params=params)
            except httpx.HTTPError as exc:
                raise SessionsUnknown(f"/experimental/session failed: {type(exc).__name__}") from None
            if response.status_code != 200:
                raise SessionsUnknown(f"/experimental/session answered HTTP {response.status_code}")
            try:
                sessions = response.json()
            except ValueError:
                raise SessionsUnknown("/experimental/session did not answer JSON") from None
            if not isinstance(sessions, list):
                raise SessionsUnknown("/experimental/session did not answer a list")
            for session in sessions:
                model = session.get("model") if isinstance(session, dict) else None
                if not isinstance(model, dict):
                    continue  # a session that never named a model uses the default one
                provider_id, model_id = model.get("providerID"), model.get("id")
                if isinstance(provider_id, str) and isinstance(model_id, str):
                    models.add(ModelRef(provider_id, model_id))
            cursor = response.headers.get("x-next-cursor")
            if not cursor or not sessions:
                return models
            params["cursor"] = cursor
        raise SessionsUnknown(f"more than {MAX_SESSION_PAGES * SESSION_PAGE} sessions")

    async def global_events(self) -> AsyncIterator[dict[str, Any]]:
        """opencode's `/global/event` stream: every directory's events, each with its `directory`."""
        timeout = httpx.Timeout(10.0, read=None)
        async with self._http.stream("GET", "/global/event", timeout=timeout) as response:
            if response.status_code != 200:
                raise OpencodeError(f"/global/event answered HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event

    async def _get_json(self, path: str, directory: str) -> Any:
        return self._decode(path, await self._get_body(path, directory))

    async def _get_body(self, path: str, directory: str) -> bytes:
        response = await self._http.get(path, params={"directory": directory})
        if response.status_code != 200:
            raise OpencodeError(f"{path} answered HTTP {response.status_code}")
        return response.content

    @staticmethod
    def _decode(path: str, body: bytes) -> Any:
        try:
            # orjson: `/config/providers` at 10,000 models (6.9 MB) decodes in ~210 ms against
            # json's ~360 and leaves ~10 MiB less resident (measured, issue 19).
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        try:
            # What orjson refuses and json takes (a lone surrogate JavaScript escaped) reads as before.
            return json.loads(body)
        except ValueError:
            raise OpencodeError(f"{path} did not answer JSON") from None


class _Provider(msgspec.Struct):
    id: str
    # Raw: each model's record is skipped over, not decoded.
    models: dict[str, msgspec.Raw] | None = None


class _ProviderList(msgspec.Struct):
    providers: list[_Provider]


def _model_ids(answer: Any) -> dict[str, set[str]]:
    """`/config/providers` decoded whole: what the typed decode refused (a provider that is not an
    object or has no string id is passed over; no provider list is an error)."""
    providers = answer.get("providers") if isinstance(answer, dict) else None
    if not isinstance(providers, list):
        raise OpencodeError("/config/providers did not answer a provider list")
    return {
        provider["id"]: set(provider.get("models") or {})
        for provider in providers
        if isinstance(provider, dict) and isinstance(provider.get("id"), str)
    }


def _is_busy(status: Any) -> bool:
    return isinstance(status, dict) and status.get("type") in {"busy", "retry"}
