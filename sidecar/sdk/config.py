"""Where each runtime is and which key it takes: arguments first, then environment variables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from sidecar.lists.anthropic import ANTHROPIC_VERSION
from sidecar.urls import carries_credentials

DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_CURSOR_BASE_URL = "https://api.cursor.com"
# The sidecar's default SIDECAR_LISTEN.
DEFAULT_SIDECAR_URL = "http://127.0.0.1:4097"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
# Anthropic's SDK waits at most a minute for a Retry-After too.
DEFAULT_MAX_RETRY_AFTER = 60.0

CursorApiVersion = Literal["auto", "v1", "v0"]
CURSOR_API_VERSIONS: tuple[str, ...] = ("auto", "v1", "v0")


@dataclass(frozen=True)
class Options:
    """Everything the SDK needs to reach the runtimes; keys are kept out of the repr."""

    anthropic_base_url: str = DEFAULT_ANTHROPIC_BASE_URL
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_version: str = ANTHROPIC_VERSION
    cursor_base_url: str = DEFAULT_CURSOR_BASE_URL
    cursor_api_key: str | None = field(default=None, repr=False)
    cursor_api_version: CursorApiVersion = "auto"
    sidecar_url: str = DEFAULT_SIDECAR_URL
    sidecar_api_key: str | None = field(default=None, repr=False)
    gateway_url: str | None = None
    gateway_api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def secrets(self) -> list[str]:
        keys = (self.anthropic_api_key, self.cursor_api_key, self.sidecar_api_key, self.gateway_api_key)
        return [key for key in keys if key]


def resolve_options(
    env: Mapping[str, str],
    *,
    anthropic_api_key: str | None = None,
    anthropic_base_url: str | None = None,
    anthropic_version: str | None = None,
    cursor_api_key: str | None = None,
    cursor_base_url: str | None = None,
    cursor_api_version: str | None = None,
    sidecar_url: str | None = None,
    sidecar_api_key: str | None = None,
    gateway_url: str | None = None,
    gateway_api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    max_retry_after: float | None = None,
) -> Options:
    """Arguments override environment variables, which override the defaults.

    A bad value is a ValueError naming the argument or variable it came from.
    """

    def pick(argument: str | None, variable: str | None, default: str | None) -> tuple[str | None, str]:
        if argument is not None:
            return argument, "argument"
        if variable is not None and env.get(variable, "").strip():
            return env[variable].strip(), variable
        return default, "default"

    def url(argument: str | None, name: str, variable: str | None, default: str) -> str:
        value, source = pick(argument, variable, default)
        assert value is not None
        return _checked_url(value, variable if source == variable else f"{name}=")

    if sidecar_url is not None and gateway_url is not None:
        raise ValueError("give sidecar_url or gateway_url, not both: opencode's models come from one of them")
    version, version_source = pick(cursor_api_version, "CURSOR_API_VERSION", "auto")
    if version not in CURSOR_API_VERSIONS:
        named = "CURSOR_API_VERSION" if version_source == "CURSOR_API_VERSION" else "cursor_api_version="
        raise ValueError(f"{named} must be one of {', '.join(CURSOR_API_VERSIONS)}, not {version!r}")
    return Options(
        anthropic_base_url=url(
            anthropic_base_url, "anthropic_base_url", "ANTHROPIC_BASE_URL", DEFAULT_ANTHROPIC_BASE_URL
        ),
        anthropic_api_key=pick(anthropic_api_key, "ANTHROPIC_API_KEY", None)[0],
        anthropic_version=anthropic_version or ANTHROPIC_VERSION,
        cursor_base_url=url(cursor_base_url, "cursor_base_url", "CURSOR_BASE_URL", DEFAULT_CURSOR_BASE_URL),
        cursor_api_key=pick(cursor_api_key, "CURSOR_API_KEY", None)[0],
        cursor_api_version=version,  # type: ignore[arg-type]
        sidecar_url=url(sidecar_url, "sidecar_url", "SIDECAR_URL", DEFAULT_SIDECAR_URL),
        sidecar_api_key=pick(sidecar_api_key, "SIDECAR_API_KEY", None)[0],
        # A gateway is asked only when named explicitly: by default opencode's models are the
        # sidecar's, which also holds the models registered on request.
        gateway_url=_checked_url(gateway_url, "gateway_url=") if gateway_url is not None else None,
        gateway_api_key=pick(gateway_api_key, "SIDECAR_GATEWAY_API_KEY", None)[0],
        timeout=_positive(timeout, "timeout", DEFAULT_TIMEOUT),
        max_retries=_retries(max_retries),
        max_retry_after=_positive(max_retry_after, "max_retry_after", DEFAULT_MAX_RETRY_AFTER, zero_ok=True),
    )


def _checked_url(value: str, named: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{named} must be an http(s) URL such as https://api.example.com, not {value!r}")
    if carries_credentials(value):
        # Never repeat the value: it holds a credential.
        raise ValueError(f"{named} must not carry credentials; pass the key separately")
    if parts.query or parts.fragment:
        raise ValueError(f"{named} must be a base URL without query or fragment, not {value!r}")
    return value.strip().rstrip("/")


def _positive(value: float | None, name: str, default: float, *, zero_ok: bool = False) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name} must be {'at least 0' if zero_ok else 'more than 0'} seconds, not {value!r}")
    return float(value)


def _retries(value: int | None) -> int:
    if value is None:
        return DEFAULT_MAX_RETRIES
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_retries must be a whole number from 0, not {value!r}")
    return value
