"""Which gateways the sidecar follows: the `[[gateways]]` entries of the TOML config file, or the
single gateway of the `SIDECAR_GATEWAY_*` shorthand, checked and resolved into `Gateway` records."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from sidecar.catalog import ModelInfo, reserved_key_reason
from sidecar.lists.formats import Format
from sidecar.naming import check_aliases
from sidecar.urls import carries_credentials

OPENAI_COMPATIBLE = "@ai-sdk/openai-compatible"
ANTHROPIC_NPM = "@ai-sdk/anthropic"

# opencode provider ids end up in model names (`litellm/gpt-5`) and in the config file.
PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A header value may name variables the way opencode's config does: `{env:NAME}`.
ENV_REFERENCE = re.compile(r"\{env:([^}]*)\}")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
NPM_PACKAGE = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*(@[A-Za-z0-9._^~<>=|* -]+)?$")


class GatewayConfigError(ValueError):
    """The gateways can't be used as configured; the message names the entry and the field."""


def check_provider_id(value: str) -> str:
    if not PROVIDER_ID.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
    # A provider id is a key of opencode's `provider` map: `constructor` made it answer 500.
    if (reason := reserved_key_reason(value)) is not None:
        raise ValueError(reason)
    return value


class GatewayEntry(BaseModel):
    """One `[[gateways]]` table, as the operator writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    url: AnyHttpUrl
    name: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    format: Format = "auto"
    npm: str = OPENAI_COMPATIBLE
    poll_interval: Annotated[float, Field(gt=0)] | None = None
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    # Fleet mode: the list comes from another sidecar (the hub) instead of the gateway itself.
    catalog_url: AnyHttpUrl | None = None
    catalog_api_key_env: str | None = None
    catalog_gateway: str | None = None

    @field_validator("id", "catalog_gateway")
    @classmethod
    def _id_shape(cls, value: str | None) -> str | None:
        return None if value is None else check_provider_id(value)

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if carries_credentials(str(url)):
            raise ValueError("put the key in the variable named by api_key_env, not in the URL")
        if url.query or url.fragment:
            raise ValueError("must not have a query or a fragment")
        return url

    @field_validator("catalog_url")
    @classmethod
    def _hub_without_credentials(cls, url: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if url is None:
            return None
        if carries_credentials(str(url)):
            raise ValueError("put the hub's key in the variable named by catalog_api_key_env, not in the URL")
        if url.query or url.fragment:
            raise ValueError("must not have a query or a fragment")
        return url

    @field_validator("api_key_env", "catalog_api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable, such as OPENROUTER_API_KEY")
        return value

    @field_validator("headers")
    @classmethod
    def _header_shape(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if not value.isprintable():
                raise ValueError(f"the value of {name!r} contains control characters")
            for ref in ENV_REFERENCE.findall(value):
                if not ENV_NAME.fullmatch(ref):
                    raise ValueError(f"the value of {name!r} names {{env:{ref}}}, which is not a variable name")
        return headers

    @field_validator("npm")
    @classmethod
    def _npm_shape(cls, value: str) -> str:
        if not NPM_PACKAGE.fullmatch(value):
            raise ValueError("must be an npm package name, such as @ai-sdk/openai-compatible")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern or not pattern.isprintable():
                raise ValueError("patterns must be non-empty and printable")
        return patterns

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, aliases: dict[str, str]) -> dict[str, str]:
        return dict(check_aliases(aliases))


@dataclass(frozen=True)
class Gateway:
    """A gateway ready to use: its addresses and secrets resolved, its entry checked."""

    id: str
    name: str
    api_base: str  # what opencode's provider gets as baseURL: `<url>/v1`
    format: str
    npm: str
    poll_interval: float
    api_key_env: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    # As written, `{env:NAME}` kept: opencode expands it itself.
    config_headers: Mapping[str, str] = field(default_factory=dict)
    # With every `{env:NAME}` replaced: what the sidecar itself sends.
    request_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    env_names: tuple[str, ...] = ()  # every variable opencode needs for this provider
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    # Fleet mode: the hub sidecar the list comes from (model traffic still goes to api_base), its
    # key (never opencode's: not in env_names) and the gateway's id there.
    catalog_url: str | None = None
    catalog_api_key_env: str | None = None
    catalog_api_key: SecretStr | None = field(default=None, repr=False)
    catalog_gateway: str | None = None

    @property
    def root(self) -> str:
        """The gateway's address without `/v1`, where LiteLLM, Ollama and LM Studio have their own routes."""
        return self.api_base.removesuffix("/v1")

    @property
    def speaks_anthropic(self) -> bool:
        """opencode talks the Messages API to it (and so does a probe)."""
        return self.npm.startswith(ANTHROPIC_NPM)

    def wants(self, model_id: str) -> bool:
        """The include/exclude globs: included when no include pattern is given or one matches."""
        if self.include and not any(fnmatch.fnmatchcase(model_id, p) for p in self.include):
            return False
        # No exclude pattern (the usual case): no generator per model.
        return not self.exclude or not any(fnmatch.fnmatchcase(model_id, p) for p in self.exclude)

    def select(self, models: Iterable[ModelInfo]) -> list[ModelInfo]:
        return [model for model in models if self.wants(model.id)]


def api_base(url: str) -> str:
    """`http://host:4000` and `http://host:4000/v1` both mean the API at `http://host:4000/v1`."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def hub_base(url: str) -> str:
    """The hub sidecar's address, without a trailing `/`: its routes are `<base>/v1/catalogs/...`."""
    return url.rstrip("/")


def _key_from(field_name: str, variable: str | None, environ: Mapping[str, str]) -> SecretStr | None:
    if variable is None:
        return None
    value = environ.get(variable, "")
    if not value.strip():
        raise ValueError(f"{field_name}: the variable {variable} is not set")
    return SecretStr(value)


def resolve_entry(entry: GatewayEntry, *, default_poll_interval: float, environ: Mapping[str, str]) -> Gateway:
    api_key = _key_from("api_key_env", entry.api_key_env, environ)
    if entry.catalog_url is None and (entry.catalog_api_key_env or entry.catalog_gateway):
        raise ValueError("catalog_api_key_env and catalog_gateway are for a hub: set catalog_url too")
    catalog_key = _key_from("catalog_api_key_env", entry.catalog_api_key_env, environ)
    request_headers: dict[str, str] = {}
    referenced: list[str] = []
    secret_values = [key.get_secret_value() for key in (api_key, catalog_key) if key is not None]
    for name, value in entry.headers.items():
        for ref in ENV_REFERENCE.findall(value):
            if ref not in environ:
                raise ValueError(f"headers: {name!r} names the variable {ref}, which is not set")
            referenced.append(ref)
            if environ[ref]:
                secret_values.append(environ[ref])
        request_headers[name] = ENV_REFERENCE.sub(lambda m: environ[m.group(1)], value)
    env_names = tuple(dict.fromkeys([*([entry.api_key_env] if entry.api_key_env else []), *referenced]))
    return Gateway(
        id=entry.id,
        name=entry.name or entry.id,
        api_base=api_base(str(entry.url)),
        format=entry.format,
        npm=entry.npm,
        poll_interval=entry.poll_interval or default_poll_interval,
        api_key_env=entry.api_key_env,
        api_key=api_key,
        config_headers=dict(entry.headers),
        request_headers=request_headers,
        env_names=env_names,
        secret_values=tuple(secret_values),
        include=tuple(entry.include),
        exclude=tuple(entry.exclude),
        aliases=dict(entry.aliases),
        catalog_url=None if entry.catalog_url is None else hub_base(str(entry.catalog_url)),
        catalog_api_key_env=entry.catalog_api_key_env,
        catalog_api_key=catalog_key,
        catalog_gateway=None if entry.catalog_url is None else entry.catalog_gateway or entry.id,
    )


def load_gateways_file(
    path: Path, *, default_poll_interval: float, environ: Mapping[str, str] | None = None
) -> tuple[Gateway, ...]:
    """Read and check the `[[gateways]]` of a TOML file; any problem is one GatewayConfigError."""
    environ = os.environ if environ is None else environ
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GatewayConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise GatewayConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"gateways"})
    if unknown:
        raise GatewayConfigError(f"{path}: unknown key {unknown[0]!r}; the file holds [[gateways]] tables")
    entries = document.get("gateways")
    if not isinstance(entries, list) or not entries:
        raise GatewayConfigError(f"{path}: no [[gateways]] table")
    return check_gateways(entries, str(path), default_poll_interval=default_poll_interval, environ=environ)


def check_gateways(
    entries: list[Any], source: str, *, default_poll_interval: float, environ: Mapping[str, str]
) -> tuple[Gateway, ...]:
    gateways: list[Gateway] = []
    aliases: dict[str, str] = {}
    for index, raw in enumerate(entries):
        label = f"{source}: gateways[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label += f" ({raw['id']})"
        try:
            entry = GatewayEntry.model_validate(raw)
        except ValidationError as exc:
            raise GatewayConfigError(f"{label}: {_first_problem(exc)}") from None
        try:
            gateway = resolve_entry(entry, default_poll_interval=default_poll_interval, environ=environ)
        except ValueError as exc:
            raise GatewayConfigError(f"{label}: {exc}") from None
        if any(known.id == gateway.id for known in gateways):
            raise GatewayConfigError(f"{label}: id: {gateway.id!r} is the id of an earlier gateway")
        for alias in gateway.aliases:
            if alias in aliases:
                raise GatewayConfigError(f"{label}: aliases: {alias!r} is an alias of gateway {aliases[alias]!r} too")
            aliases[alias] = gateway.id
        gateways.append(gateway)
    return tuple(gateways)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a known field"
    return f"{where}: {message}" if where else message
