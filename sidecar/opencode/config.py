"""Render opencode's config from the catalog, merged over the operator's own, and write it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import json5

from sidecar.catalog import Catalog
from sidecar.settings import Settings

SCHEMA_URL = "https://opencode.ai/config.json"
OPENAI_COMPATIBLE = "@ai-sdk/openai-compatible"
# opencode reads the gateway key from its environment; the file holds only this reference.
API_KEY_ENV = "SIDECAR_GATEWAY_API_KEY"


class Untrusted(str):
    """A string that came from a gateway: written so that opencode never expands it.

    opencode replaces `{env:NAME}` and `{file:path}` anywhere in its config text before it
    parses the JSON. Writing the braces as JSON escapes (\\u007b, \\u007d) keeps the text the
    same after parsing while leaving nothing for that substitution to match.
    """


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


def render_provider_map(catalog: Catalog, settings: Settings) -> dict[str, Any]:
    """The sidecar's own part of opencode's config: one provider holding every catalog model."""
    options: dict[str, Any] = {"baseURL": f"{settings.gateway_base}/v1"}
    if settings.gateway_api_key is not None:
        options["apiKey"] = f"{{env:{API_KEY_ENV}}}"
    models = {
        Untrusted(model.id): {
            "name": Untrusted(model.display_name),
            "limit": {
                "context": model.max_input_tokens or settings.default_context_limit,
                "output": model.max_tokens or settings.default_output_limit,
            },
        }
        for model in catalog
    }
    return {
        settings.provider_id: {
            "npm": OPENAI_COMPATIBLE,
            "name": settings.provider_name,
            "options": options,
            "models": models,
        }
    }


def render_config(catalog: Catalog, settings: Settings, base: dict[str, Any]) -> dict[str, Any]:
    """The whole file opencode reads: the operator's config with the sidecar's provider over it."""
    enabled = [settings.provider_id]
    for provider in [*base.get("enabled_providers", []), *base.get("provider", {})]:
        if isinstance(provider, str) and provider not in enabled:
            enabled.append(provider)
    generated: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "enabled_providers": enabled,
        "provider": render_provider_map(catalog, settings),
    }
    default_model = settings.default_model_ref()
    if default_model is not None:
        generated["model"] = Untrusted(default_model)
    return deep_merge(base, generated)


def rendered_model_ids(config: dict[str, Any], provider_id: str) -> set[str]:
    return set(config.get("provider", {}).get(provider_id, {}).get("models", {}))


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


def dump_config(value: Any, indent: str = "") -> str:
    """JSON text in which no gateway-provided string can trigger opencode's substitution."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_dump_string(k)}: {dump_config(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{inner}{dump_config(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    if isinstance(value, str):
        return _dump_string(value)
    return json.dumps(value)


def _dump_string(value: str) -> str:
    text = json.dumps(str(value))
    if isinstance(value, Untrusted):
        text = text.replace("{", "\\u007b").replace("}", "\\u007d")
    return text


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` so that a reader sees the old file or the new one, whole, even after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
