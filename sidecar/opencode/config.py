"""Render opencode's config from the catalog, merged over the operator's own, and write it."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import json5
import orjson

from sidecar.catalog import Catalog, ModelInfo, reserved_key_reason
from sidecar.gateway.config import Gateway
from sidecar.http.gateway_request import proxied_base_url
from sidecar.http.mcp_route import MCP_PATH
from sidecar.opencode.plugin import with_plugin
from sidecar.settings import OPENCODE_TOKEN_ENV, Settings

SCHEMA_URL = "https://opencode.ai/config.json"
# The sidecar's entry in opencode's `mcp` map: opencode names its tools `sidecar_list_models`, ...
MCP_SERVER_NAME = "sidecar"


class Untrusted(str):
    """A string that came from a gateway: written so that opencode never expands it.

    opencode replaces `{env:NAME}` and `{file:path}` anywhere in its config text before it
    parses the JSON. Writing the braces as JSON escapes (\\u007b, \\u007d) keeps the text the
    same after parsing while leaving nothing for that substitution to match.
    """


def untrusted(text: str) -> str:
    """A gateway's string as the config holds it: Untrusted when it has a brace to escape, else the
    plain string, which orjson writes itself (and takes as a key, which it refuses an Untrusted)."""
    return Untrusted(text) if "{" in text or "}" in text else text


class BaseConfigError(Exception):
    """The operator's opencode config cannot be used."""


def load_base_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaseConfigError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        config = json5.loads(text)
    except ValueError as exc:
        raise BaseConfigError(f"{path} is not valid JSON or JSONC: {exc}") from None
    if not isinstance(config, dict):
        raise BaseConfigError(f"{path} must hold a JSON object")
    return config


def render_model(model: ModelInfo, settings: Settings) -> dict[str, Any]:
    """One model in opencode's shape, with every field the gateway published."""
    entry: dict[str, Any] = {
        "name": untrusted(model.display_name),
        "limit": {
            "context": model.max_input_tokens or settings.default_context_limit,
            "output": model.max_tokens or settings.default_output_limit,
        },
    }
    if model.cost is not None:
        entry["cost"] = model.cost.model_dump(exclude_none=True)
    if model.input_modalities is not None or model.output_modalities is not None:
        inputs = list(model.input_modalities or ("text",))
        entry["modalities"] = {"input": inputs, "output": list(model.output_modalities or ("text",))}
        # opencode sends files and images only to models that take attachments.
        entry["attachment"] = any(kind in inputs for kind in ("image", "pdf"))
    if model.tool_call is not None:
        entry["tool_call"] = model.tool_call
    if model.reasoning is not None:
        entry["reasoning"] = model.reasoning
    if model.release_date is not None:
        entry["release_date"] = model.release_date.isoformat()
    return entry


def provider_options(gateway: Gateway, settings: Settings) -> dict[str, Any]:
    """How opencode reaches a gateway. With key custody: through the sidecar, with the token, which
    opens nothing but that route; the sidecar adds the key and the gateway's headers. Without: the
    gateway itself, its key and header variables as references opencode expands."""
    if settings.key_custody:
        # The SDKs append their paths to it (`/chat/completions`, `/messages`), and the route puts
        # what follows its `/v1` after the gateway's api base (measured: tests/integration/test_key_custody.py).
        return {
            "baseURL": proxied_base_url(settings.sidecar_origin, gateway.id),
            "apiKey": f"{{env:{OPENCODE_TOKEN_ENV}}}",
        }
    options: dict[str, Any] = {"baseURL": gateway.api_base}
    if gateway.api_key_env is not None:
        options["apiKey"] = f"{{env:{gateway.api_key_env}}}"
    headers = dict(gateway.config_headers)
    if gateway.format == "portkey" and gateway.api_key_env is not None:
        headers.setdefault("x-portkey-api-key", f"{{env:{gateway.api_key_env}}}")
    if headers:
        options["headers"] = headers
    return options


def render_provider(gateway: Gateway, catalog: Catalog, settings: Settings) -> dict[str, Any]:
    """One gateway as an opencode provider; no key or header value in it, only references."""
    return {
        "npm": gateway.npm,
        "name": gateway.name,
        "options": provider_options(gateway, settings),
        # The gateway readers, the resolver and the saved-state loader refuse these ids already;
        # one that slipped past them would make opencode answer 500 for every provider.
        "models": {
            untrusted(model.id): render_model(model, settings)
            for model in catalog
            if reserved_key_reason(model.id) is None
        },
    }


def render_mcp_server(settings: Settings) -> dict[str, Any]:
    """The sidecar's MCP server as one of opencode's remote MCP servers, reached with the internal
    token as the gateway providers are (a reference opencode expands from its environment)."""
    return {
        "type": "remote",
        "url": f"{settings.sidecar_origin}{MCP_PATH}",
        "headers": {"Authorization": f"Bearer {{env:{OPENCODE_TOKEN_ENV}}}"},
        # Remote servers try OAuth by default; ours takes the token, and has no OAuth to discover.
        "oauth": False,
        "enabled": True,
    }


def render_config(catalogs: dict[str, Catalog], settings: Settings, base: dict[str, Any]) -> dict[str, Any]:
    """The whole file opencode reads: the operator's config with one provider per gateway over it."""
    enabled = [gateway.id for gateway in settings.gateways]
    for provider in [*base.get("enabled_providers", []), *base.get("provider", {})]:
        if isinstance(provider, str) and provider not in enabled:
            enabled.append(provider)
    generated: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "enabled_providers": enabled,
        "provider": {
            gateway.id: render_provider(gateway, catalogs.get(gateway.id, Catalog()), settings)
            for gateway in settings.gateways
        },
    }
    if settings.mcp_in_opencode:
        # Merged into the operator's `mcp` map: their servers stay beside ours.
        generated["mcp"] = {MCP_SERVER_NAME: render_mcp_server(settings)}
    default_model = settings.default_model_ref()
    if default_model is not None:
        generated["model"] = untrusted(default_model)
    merged = deep_merge(base, generated)
    if settings.instance_plugin:
        merged["plugin"] = with_plugin(base.get("plugin"))
    for gateway in settings.gateways:
        provider = merged["provider"][gateway.id]
        # opencode lays a configured provider over its built-in one of the same id (`openai`,
        # `anthropic`, ...), whose own models would otherwise show up beside the gateway's.
        if not isinstance(provider.get("whitelist"), list):
            provider["whitelist"] = [untrusted(model_id) for model_id in provider["models"]]
    return merged


def rendered_model_ids(config: dict[str, Any], provider_ids: list[str]) -> dict[str, set[str]]:
    """Per provider, the model ids opencode should list once it has read `config`."""
    expected = {}
    for provider_id in provider_ids:
        provider = config.get("provider", {}).get(provider_id, {})
        models = set(provider.get("models", {}))
        if isinstance(provider.get("whitelist"), list):
            models &= set(provider["whitelist"])
        if isinstance(provider.get("blacklist"), list):
            models -= set(provider["blacklist"])
        expected[provider_id] = models
    return expected


def deep_merge(lower: dict[str, Any], upper: dict[str, Any]) -> dict[str, Any]:
    """opencode's own layering: objects merge key by key, anything else from `upper` wins."""
    merged = dict(lower)
    for key, value in upper.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def dump_config(value: Any) -> str:
    """JSON text in which no gateway-provided string can trigger opencode's substitution, indented
    by two spaces.

    orjson writes it: 10,000 models, a 1.9 MiB config, in ~4 ms against ~165 ms for the walk below
    (measured on the 2-core bench machine, issue 19), the same text. An Untrusted value becomes a
    fragment with its braces escaped; non-ASCII characters, which orjson writes as UTF-8, are
    escaped as json escapes them, so no U+2028 or BOM reaches opencode's parser. An Untrusted key,
    which orjson cannot take, and what else orjson cannot write (a lone surrogate, an integer
    beyond 64 bits in the operator's config) are written by the walk, as before.
    """
    try:
        text = orjson.dumps(value, default=_as_json, option=orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_SUBCLASS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _dump_json(value)
    # Outside its strings JSON is ASCII: every other character is inside one.
    return text if text.isascii() else _NON_ASCII.sub(_ascii_escape, text)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _ascii_escape(match: re.Match[str]) -> str:
    """json's escape of a character: \\uXXXX, a surrogate pair beyond the Basic Multilingual Plane."""
    code = ord(match[0])
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


def _as_json(value: Any) -> Any:
    """What orjson writes for the subclasses it passes here: an Untrusted string escaped, any other
    as its plain type (a base config's dict subclass, say)."""
    if isinstance(value, Untrusted):
        return orjson.Fragment(_dump_string(value))
    for plain in (str, int, dict, list):
        if isinstance(value, plain):
            return plain(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dump_json(value: Any, indent: str = "") -> str:
    """The same text, walked in Python: json's escapes, Untrusted braces as \\u007b and \\u007d."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_dump_string(k)}: {_dump_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{inner}{_dump_json(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    if isinstance(value, str):
        return _dump_string(value)
    return json.dumps(value)


def _dump_string(value: str) -> str:
    text = json.dumps(str(value))
    if isinstance(value, Untrusted):
        text = text.replace("{", "\\u007b").replace("}", "\\u007d")
    return text


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` so that a reader sees the old file or the new one, whole, even after a crash.

    Owner-only by default (the state directory's files); attach mode's shared config passes 0o644.
    """
    # A directory made here for an owner-only file is owner-only too; one for a shared file is not.
    path.parent.mkdir(mode=0o700 if not mode & 0o077 else 0o777, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
