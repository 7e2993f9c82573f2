"""The one rule for credentials in a URL: there must be none. A key in `https://user:key@host`
ends up wherever the URL is written: logs, error messages, opencode's config, a process list.
Every URL the sidecar or the SDK is given is checked with it; each caller says where the key goes
instead, and never repeats the URL. Pure and stdlib only: the SDK uses it too, without the daemon."""

from __future__ import annotations

from urllib.parse import urlsplit


def carries_credentials(url: str) -> bool:
    """A user name or a password before the host: `https://user:key@host`, `https://key@host`,
    `https://:key@host`. A bare `@` names no one, and is not refused."""
    parts = urlsplit(url.strip())
    return bool(parts.username or parts.password)
