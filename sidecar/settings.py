"""The sidecar's settings: one frozen object, read from `SIDECAR_*` variables and checked at start."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.http.exposure import BadAddress, is_loopback, normal_host, normal_origin
from sidecar.http.connections import (
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimits,
    connections_that_fit,
    open_file_limits,
    open_files_needed,
)
from sidecar.gateway.config import (
    Format,
    Gateway,
    GatewayConfigError,
    api_base,
    check_provider_id,
    load_gateways_file,
)
from sidecar.naming import check_aliases
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT, PassthroughLimits
from sidecar.urls import carries_credentials

ENV_PREFIX = "SIDECAR_"
# The shorthand gateway's key reaches opencode under this name; the file holds only the reference.
API_KEY_ENV = "SIDECAR_GATEWAY_API_KEY"

Seconds = Annotated[float, Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
# A list as `a,b,c`, friendlier in an environment variable than JSON.
CommaList = Annotated[tuple[str, ...], NoDecode]

# The API key grants what opencode grants, a shell: long enough that it can't be guessed, and that
# it is no common word.
MIN_API_KEY_LENGTH = 32
MAKE_A_KEY = "make one with: openssl rand -hex 32"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opencode-sidecar"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    config: Path | None = None
    gateway_url: AnyHttpUrl | None = None
    gateway_api_key: SecretStr | None = None
    gateway_format: Format = "auto"
    gateway_timeout: Annotated[float, Field(gt=0)] = 10.0
    gateway_retries: Annotated[int, Field(ge=0, le=20)] = 3
    provider_id: str = "litellm"
    provider_name: str = "LiteLLM"
    poll_interval: Annotated[float, Field(gt=0)] = 30.0
    shrink_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    shrink_confirmations: Annotated[int, Field(ge=1, le=1000)] = 3
    listen: str = "127.0.0.1:4097"
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    body_timeout: Annotated[float, Field(gt=0)] = 60.0
    max_connections: int = Field(default_factory=lambda: default_max_connections(), validate_default=True)
    # Event streams forwarded at once (GET /event, /global/event): in total, and per client address.
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = PassthroughLimits.max_streams
    max_streams_per_client: Annotated[int, Field(ge=1, le=100_000)] = PassthroughLimits.max_streams_per_client
    # Bytes of model-carrying bodies (prompts with their attachments) held whole at once; at least
    # one body of the largest size forwarded, or such a prompt could never pass.
    body_memory: Annotated[int, Field(ge=FORWARDED_BODY_LIMIT, le=2**40)] = PassthroughLimits.body_memory
    opencode_bin: str = "opencode"
    opencode_port: Port = 4096
    opencode_password: SecretStr | None = None
    # Attach mode: an opencode someone else runs, reading the config file the sidecar writes.
    opencode_url: AnyHttpUrl | None = None
    opencode_config: Path | None = None
    opencode_start_timeout: Annotated[float, Field(gt=0)] = 60.0
    health_interval: Annotated[float, Field(gt=0)] = 5.0
    health_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    opencode_directory: Path | None = None
    # Directories kept in step with the config (each costs a reload per change); least recently used dropped first.
    max_directories: Annotated[int, Field(ge=1, le=100_000)] = 1000
    state_dir: Path = Field(default_factory=_default_state_dir)
    base_config: Path | None = None
    default_model: str | None = None
    default_context_limit: Annotated[int, Field(gt=0)] = 128_000
    default_output_limit: Annotated[int, Field(gt=0)] = 8_192
    # Each gateway's models handed to opencode; past it the newest, in the gateway's order. bench/scale.py
    # found 13,000 the largest whose reload kept opencode's health answers within 1 s (2 cores): 5,000 leaves
    # room for a slower machine, and its sidecar peaked at 160 MiB with a 100,001-model gateway.
    max_models: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    model_aliases: dict[str, str] = Field(default_factory=dict)
    probe_models: bool = False
    resolve_timeout: Annotated[float, Field(gt=0)] = 120.0
    # Models registered on request; past it the least recently used one no session uses makes room.
    max_registered: Annotated[int, Field(ge=1, le=100_000)] = 256
    api_key: SecretStr | None = None
    # Browsers: names besides loopback's that may be in `Host`, sites besides the request's own in `Origin`.
    allowed_hosts: CommaList = ()
    allowed_origins: CommaList = ()
    reload: Literal["auto", "restart"] = "auto"
    reload_timeout: Annotated[float, Field(gt=0)] = 600.0
    restart_backoff_initial: Seconds = 10.0
    restart_backoff_max: Seconds = 300.0
    restart_backoff_reset: Seconds = 600.0
    stop_grace: Seconds = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _gateways: tuple[Gateway, ...] = PrivateAttr(default=())

    @field_validator("gateway_url")
    @classmethod
    def _no_credentials_in_url(cls, url: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if url is not None and carries_credentials(str(url)):
            raise ValueError("put the key in SIDECAR_GATEWAY_API_KEY, not in the URL")
        return url

    @field_validator("provider_id")
    @classmethod
    def _provider_id_shape(cls, value: str) -> str:
        return check_provider_id(value)

    @field_validator("config")
    @classmethod
    def _config_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @field_validator("listen")
    @classmethod
    def _listen_shape(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("max_connections")
    @classmethod
    def _connections_at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @model_validator(mode="after")
    def _connections_fit(self) -> Settings:
        # Each forwarded event stream holds a connection to opencode beside its client's.
        value, streams = self.max_connections, self.max_streams
        _, hard = open_file_limits()
        if value > connections_that_fit(hard, streams):
            raise ValueError(
                f"{ENV_PREFIX}MAX_CONNECTIONS: {value} connections (with {ENV_PREFIX}MAX_STREAMS={streams}) need "
                f"{open_files_needed(value, streams)} open files, more than this process may open ({hard}, its "
                "RLIMIT_NOFILE hard limit); set fewer, or raise that limit (ulimit -Hn, systemd LimitNOFILE=, "
                "docker run --ulimit nofile=)"
            )
        return self

    @field_validator("opencode_password")
    @classmethod
    def _password_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("base_config")
    @classmethod
    def _base_config_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @field_validator("opencode_directory")
    @classmethod
    def _directory_shape(cls, path: Path | None) -> Path | None:
        # Relative is fine here: it is the operator's, resolved against the sidecar's working directory.
        if path is not None:
            try:
                check_directory(os.path.abspath(path))
            except InvalidDirectory as exc:
                raise ValueError(str(exc)) from None
        return path

    @model_validator(mode="after")
    def _directory_exists(self) -> Settings:
        # An attached opencode's directory is on its own filesystem (another container's).
        path = self.opencode_directory
        if path is not None and self.opencode_url is None and not path.is_dir():
            raise ValueError(f"{ENV_PREFIX}OPENCODE_DIRECTORY: no such directory: {path}")
        return self

    @field_validator("model_aliases")
    @classmethod
    def _aliases_are_names(cls, aliases: dict[str, str]) -> dict[str, str]:
        return dict(check_aliases(aliases))

    @field_validator("api_key")
    @classmethod
    def _api_key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be blank; unset it to turn authentication off")
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_API_KEY_LENGTH} characters, as it grants a shell; {MAKE_A_KEY}"
            )
        return value

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_shape(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(dict.fromkeys(normal_host(host) for host in hosts))
        except BadAddress as exc:
            raise ValueError(f"{exc}; expected host names or addresses, comma-separated") from None

    @field_validator("allowed_origins")
    @classmethod
    def _origins_shape(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(dict.fromkeys(normal_origin(origin) for origin in origins))
        except BadAddress as exc:
            raise ValueError(f"{exc}; expected origins such as https://app.example.com, comma-separated") from None

    @model_validator(mode="after")
    def _key_beyond_loopback(self) -> Settings:
        if self.api_key is None and not is_loopback(self.listen_host):
            raise ValueError(
                f"{ENV_PREFIX}API_KEY: is required to listen on {self.listen_host}, beyond loopback: opencode "
                f"runs shell commands for whoever reaches it; set {ENV_PREFIX}API_KEY ({MAKE_A_KEY}) or "
                f"{ENV_PREFIX}LISTEN=127.0.0.1:{self.listen_port}"
            )
        return self

    @field_validator("default_model")
    @classmethod
    def _default_model_shape(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("must be a model name without control characters")
        return value or None

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.restart_backoff_max < self.restart_backoff_initial:
            raise ValueError(
                "SIDECAR_RESTART_BACKOFF_MAX must not be below SIDECAR_RESTART_BACKOFF_INITIAL"
            )
        return self

    @model_validator(mode="after")
    def _attach_mode(self) -> Settings:
        if self.opencode_url is None:
            if self.opencode_config is not None:
                raise ValueError(f"{ENV_PREFIX}OPENCODE_CONFIG: is for attach mode; set {ENV_PREFIX}OPENCODE_URL too")
            return self
        if carries_credentials(str(self.opencode_url)):
            raise ValueError(f"{ENV_PREFIX}OPENCODE_URL: put the password in {ENV_PREFIX}OPENCODE_PASSWORD, not in the URL")
        if self.opencode_config is None:
            raise ValueError(
                f"{ENV_PREFIX}OPENCODE_CONFIG: is required with {ENV_PREFIX}OPENCODE_URL (the file opencode reads "
                "through OPENCODE_CONFIG)"
            )
        if self.reload == "restart":
            raise ValueError(f"{ENV_PREFIX}RELOAD: restart needs the sidecar to run opencode; attach mode reloads only")
        return self

    @model_validator(mode="after")
    def _one_source_of_gateways(self) -> Settings:
        if self.config is not None and self.gateway_url is not None:
            raise ValueError(
                f"set {ENV_PREFIX}GATEWAY_URL or the gateways of {ENV_PREFIX}CONFIG ({self.config}), not both"
            )
        if self.config is not None:
            try:
                self._gateways = load_gateways_file(self.config, default_poll_interval=self.poll_interval)
            except GatewayConfigError as exc:
                raise ValueError(f"{ENV_PREFIX}CONFIG: {exc}") from None
        elif self.gateway_url is not None:
            self._gateways = (self._shorthand_gateway(self.gateway_url),)
        else:
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY_URL: is required (or name a file of [[gateways]] in {ENV_PREFIX}CONFIG)"
            )
        return self

    def _shorthand_gateway(self, url: AnyHttpUrl) -> Gateway:
        key = self.gateway_api_key
        return Gateway(
            id=self.provider_id,
            name=self.provider_name,
            api_base=api_base(str(url)),
            format=self.gateway_format,
            npm="@ai-sdk/openai-compatible",
            poll_interval=self.poll_interval,
            api_key_env=API_KEY_ENV if key is not None else None,
            api_key=key,
            env_names=(API_KEY_ENV,) if key is not None else (),
            secret_values=(key.get_secret_value(),) if key is not None and key.get_secret_value() else (),
        )

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        """The gateways to follow, in the operator's order; the first is the default provider."""
        return self._gateways

    @property
    def default_provider(self) -> str:
        return self._gateways[0].id

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.max_connections, self.header_timeout, self.body_timeout, self.max_streams)

    @property
    def passthrough_limits(self) -> PassthroughLimits:
        return PassthroughLimits(self.max_streams, self.max_streams_per_client, self.body_memory)

    @property
    def listen_host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.listen)[1]

    def default_model_ref(self) -> str | None:
        """`SIDECAR_DEFAULT_MODEL` as opencode's `provider/model`: a bare name joins the first gateway."""
        if self.default_model is None:
            return None
        if any(self.default_model.startswith(f"{gateway.id}/") for gateway in self.gateways):
            return self.default_model
        return f"{self.default_provider}/{self.default_model}"

    @property
    def attached(self) -> bool:
        """The sidecar manages an opencode it did not start."""
        return self.opencode_url is not None

    @property
    def opencode_base(self) -> str:
        if self.opencode_url is not None:
            return str(self.opencode_url).rstrip("/")
        return f"http://127.0.0.1:{self.opencode_port}"

    def with_password(self) -> Settings:
        """These settings with an opencode password: the given one, or a fresh random one for the
        opencode the sidecar starts (an attached one has the password it has, or none)."""
        if self.opencode_password is not None or self.attached:
            return self
        return self.model_copy(update={"opencode_password": SecretStr(secrets.token_urlsafe(32))})

    def held_secrets(self) -> list[str]:
        """The secrets the sidecar holds for others (the gateways' keys, opencode's password), which
        forwarded answers must never show. The caller's own API key is not one: they sent it, and
        redacting it would only corrupt answers that happen to contain the same text."""
        values = [self.gateway_api_key, self.opencode_password]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        for gateway in self.gateways:
            found.extend(gateway.secret_values)
        return list(dict.fromkeys(found))

    def secrets(self) -> list[str]:
        """Every secret value, the API key too, so that logs can scrub them wherever they turn up."""
        key = [self.api_key.get_secret_value()] if self.api_key is not None else []
        return list(dict.fromkeys([*self.held_secrets(), *key]))


def default_max_connections() -> int:
    """1,000, or as many as the open-file limit allows beside the default number of event streams,
    once the soft limit is raised to the hard one."""
    fit = connections_that_fit(open_file_limits()[1], PassthroughLimits.max_streams)
    return max(min(DEFAULT_MAX_CONNECTIONS, fit), 1)


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, for example 127.0.0.1:4097")
    return host.strip("[]"), int(port)


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable and never echoes a secret."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    except PydanticSettingsError as exc:
        # Raised for a complex value (a JSON object) that doesn't parse.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{field.group(1).upper()}" if field else "settings"
        raise SettingsError(f"{name}: is not valid JSON") from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        # A check across settings names its variables itself.
        problems.append(f"{ENV_PREFIX}{field.upper()}: {message}" if field else message)
    return "; ".join(problems)
