"""The sidecar's settings: one frozen object, read from `SIDECAR_*` variables and checked at start.

Each setting's own shape is declared with its type (sidecar.settings_fields); the checks across
settings are here; a refusal becomes one line naming the variable (sidecar.settings_errors)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from sidecar.http.connections import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_WEBSOCKETS,
    ConnectionLimits,
    connections_that_fit,
    open_file_limits,
    open_files_needed,
)
from sidecar.http.exposure import is_loopback, reachable_origin
from sidecar.http.gateway_request import DEFAULT_IDLE_TIMEOUT
from sidecar.gateway.config import Format, Gateway, GatewayConfigError, load_gateways_file
from sidecar.gateway.shorthand import shorthand_gateway
from sidecar.http.passthrough_limits import FORWARDED_BODY_LIMIT, PassthroughLimits
from sidecar.settings_errors import SettingsError, describe_source_error, describe_validation_error
from sidecar.settings_fields import (
    MAKE_A_KEY,
    ApiKey,
    AtLeastOne,
    CatalogUrl,
    Directory,
    GatewayToken,
    GatewayUrl,
    HostList,
    ListenAddress,
    ModelAliases,
    ModelName,
    OriginList,
    Password,
    Port,
    ProviderId,
    ReadableFile,
    Seconds,
    split_listen,
)
from sidecar.urls import carries_credentials

ENV_PREFIX = "SIDECAR_"
# What opencode knows the gateway token by: its config refers to it, its environment holds it.
OPENCODE_TOKEN_ENV = "OPENCODE_SIDECAR_TOKEN"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opencode-sidecar"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    config: ReadableFile | None = None
    gateway_url: GatewayUrl | None = None
    gateway_api_key: SecretStr | None = None
    gateway_format: Format = "auto"
    gateway_timeout: Annotated[float, Field(gt=0)] = 10.0
    gateway_retries: Annotated[int, Field(ge=0, le=20)] = 3
    # Fleet mode for the shorthand's gateway: its list from a hub sidecar, with the hub's key.
    catalog_url: CatalogUrl | None = None
    catalog_api_key: Password = None
    provider_id: ProviderId = "litellm"
    provider_name: str = "LiteLLM"
    poll_interval: Annotated[float, Field(gt=0)] = 30.0
    shrink_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    shrink_confirmations: Annotated[int, Field(ge=1, le=1000)] = 3
    listen: ListenAddress = "127.0.0.1:4097"
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    body_timeout: Annotated[float, Field(gt=0)] = 60.0
    max_connections: AtLeastOne = Field(default_factory=lambda: default_max_connections(), validate_default=True)
    # Event streams forwarded at once (GET /event, /global/event): in total, and per client address.
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = PassthroughLimits.max_streams
    max_streams_per_client: Annotated[int, Field(ge=1, le=100_000)] = PassthroughLimits.max_streams_per_client
    # WebSockets forwarded at once (opencode's terminals): each holds its client's socket (which
    # leaves the connection table once upgraded) and one to opencode.
    max_websockets: Annotated[int, Field(ge=1, le=100_000)] = DEFAULT_MAX_WEBSOCKETS
    # Bytes of model-carrying bodies (prompts with their attachments) held whole at once; at least
    # one body of the largest size forwarded, or such a prompt could never pass.
    body_memory: Annotated[int, Field(ge=FORWARDED_BODY_LIMIT, le=2**40)] = PassthroughLimits.body_memory
    opencode_bin: str = "opencode"
    opencode_port: Port = 4096
    opencode_password: Password = None
    # Attach mode: an opencode someone else runs, reading the config file the sidecar writes.
    opencode_url: AnyHttpUrl | None = None
    opencode_config: Path | None = None
    opencode_start_timeout: Annotated[float, Field(gt=0)] = 60.0
    health_interval: Annotated[float, Field(gt=0)] = 5.0
    health_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    opencode_directory: Directory | None = None
    # Directories kept in step with the config (each costs a reload per change); least recently used dropped first.
    max_directories: Annotated[int, Field(ge=1, le=100_000)] = 1000
    state_dir: Path = Field(default_factory=_default_state_dir)
    base_config: ReadableFile | None = None
    default_model: ModelName = None
    default_context_limit: Annotated[int, Field(gt=0)] = 128_000
    default_output_limit: Annotated[int, Field(gt=0)] = 8_192
    # Each gateway's models handed to opencode; past it the newest, in the gateway's order. bench/scale.py
    # found 13,000 the largest whose reload kept opencode's health answers within 1 s (2 cores): 5,000 leaves
    # room for a slower machine, and its sidecar peaked at 160 MiB with a 100,001-model gateway.
    max_models: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    model_aliases: ModelAliases = Field(default_factory=dict)
    # A name that matches nothing listed and no wildcard route of its gateway: refused with the
    # closest listed names, probed with a one-token request, or registered blind.
    unlisted_models: Literal["refuse", "probe", "register"] = "refuse"
    # Deprecated: `true` is SIDECAR_UNLISTED_MODELS=probe (the supervisor logs a warning).
    probe_models: bool | None = None
    resolve_timeout: Annotated[float, Field(gt=0)] = 120.0
    # A listed model the gateway refuses (sidecar/failing.py) is retried in the background this
    # long after the refusal, the wait doubling after each failed retry up to the max.
    failing_retry_initial: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    failing_retry_max: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    # Models registered on request; past it the least recently used one no session uses makes room.
    max_registered: Annotated[int, Field(ge=1, le=100_000)] = 256
    api_key: ApiKey | None = None
    # Key custody: opencode's providers reach each gateway through the sidecar, which alone holds the keys.
    key_custody: bool = True
    # The internal token opencode's providers present on /gateway/ routes (key custody): a fresh
    # random one per start unless given; attach mode gives both containers the same one.
    gateway_token: GatewayToken | None = None
    # The sidecar's MCP server (/mcp) named in opencode's config, so that every agent has its tools;
    # opencode authenticates with the internal token (see mcp_in_opencode).
    mcp: bool = True
    # The longest silence of a gateway inside one answer forwarded on a /gateway/ route.
    gateway_idle_timeout: Annotated[float, Field(gt=0)] = DEFAULT_IDLE_TIMEOUT
    # Browsers: names besides loopback's that may be in `Host`, sites besides the request's own in `Origin`.
    allowed_hosts: HostList = ()
    allowed_origins: OriginList = ()
    reload: Literal["auto", "restart"] = "auto"
    # No opencode at all (a fleet's hub): the catalogs are served, opencode's routes answer 404.
    catalog_only: bool = False
    # The plugin that has each opencode instance announce its directory (opencode/plugin.py). Off:
    # a directory loaded straight on opencode's port is reloaded only once it is seen otherwise.
    instance_plugin: bool = True
    # How long a prompt through the pass-through waits for its directory's reload (milliseconds
    # as a rule) before it goes on anyway.
    prompt_reload_wait: Annotated[float, Field(gt=0)] = 5.0
    reload_timeout: Annotated[float, Field(gt=0)] = 600.0
    restart_backoff_initial: Seconds = 10.0
    restart_backoff_max: Seconds = 300.0
    restart_backoff_reset: Seconds = 600.0
    stop_grace: Seconds = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _gateways: tuple[Gateway, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _connections_fit(self) -> Settings:
        # Each forwarded event stream holds a connection to opencode beside its client's; each
        # WebSocket its client's (outside the connection bound once upgraded) and opencode's.
        value, streams, websockets = self.max_connections, self.max_streams, self.max_websockets
        _, hard = open_file_limits()
        if value > connections_that_fit(hard, streams, websockets):
            raise ValueError(
                f"{ENV_PREFIX}MAX_CONNECTIONS: {value} connections (with {ENV_PREFIX}MAX_STREAMS={streams}, "
                f"{ENV_PREFIX}MAX_WEBSOCKETS={websockets}) need "
                f"{open_files_needed(value, streams, websockets)} open files, more than this process may open ({hard}, its "
                "RLIMIT_NOFILE hard limit); set fewer, or raise that limit (ulimit -Hn, systemd LimitNOFILE=, "
                "docker run --ulimit nofile=)"
            )
        return self

    @model_validator(mode="after")
    def _directory_exists(self) -> Settings:
        # An attached opencode's directory is on its own filesystem (another container's).
        path = self.opencode_directory
        if path is not None and self.opencode_url is None and not path.is_dir():
            raise ValueError(f"{ENV_PREFIX}OPENCODE_DIRECTORY: no such directory: {path}")
        return self

    @model_validator(mode="after")
    def _key_beyond_loopback(self) -> Settings:
        if self.api_key is None and not is_loopback(self.listen_host):
            raise ValueError(
                f"{ENV_PREFIX}API_KEY: is required to listen on {self.listen_host}, beyond loopback: opencode "
                f"runs shell commands for whoever reaches it; set {ENV_PREFIX}API_KEY ({MAKE_A_KEY}) or "
                f"{ENV_PREFIX}LISTEN=127.0.0.1:{self.listen_port}"
            )
        return self

    @model_validator(mode="after")
    def _token_is_not_the_key(self) -> Settings:
        # Each is refused where the other is taken: one value for both would open every route to
        # whoever reads opencode's environment.
        if self.api_key is not None and self.gateway_token is not None:
            if self.api_key.get_secret_value() == self.gateway_token.get_secret_value():
                raise ValueError(f"{ENV_PREFIX}GATEWAY_TOKEN: must not be the same as {ENV_PREFIX}API_KEY")
        return self

    @model_validator(mode="after")
    def _unlisted_or_probe(self) -> Settings:
        if self.probe_models and "unlisted_models" in self.model_fields_set and self.unlisted_models != "probe":
            raise ValueError(
                f"{ENV_PREFIX}PROBE_MODELS: is deprecated and says probe, but {ENV_PREFIX}UNLISTED_MODELS says "
                f"{self.unlisted_models}; unset {ENV_PREFIX}PROBE_MODELS"
            )
        return self

    @property
    def unlisted_policy(self) -> Literal["refuse", "probe", "register"]:
        """What a name matching nothing listed gets: SIDECAR_UNLISTED_MODELS, or probe for the
        deprecated SIDECAR_PROBE_MODELS=true."""
        return "probe" if self.probe_models and "unlisted_models" not in self.model_fields_set else self.unlisted_models

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.restart_backoff_max < self.restart_backoff_initial:
            raise ValueError(
                "SIDECAR_RESTART_BACKOFF_MAX must not be below SIDECAR_RESTART_BACKOFF_INITIAL"
            )
        return self

    @model_validator(mode="after")
    def _catalog_only(self) -> Settings:
        if not self.catalog_only:
            return self
        for name, value in (
            ("OPENCODE_URL", self.opencode_url),
            ("OPENCODE_CONFIG", self.opencode_config),
            ("OPENCODE_DIRECTORY", self.opencode_directory),
            ("BASE_CONFIG", self.base_config),
            ("RELOAD", None if self.reload == "auto" else self.reload),
        ):
            if value is not None:
                raise ValueError(
                    f"{ENV_PREFIX}{name}: is for an opencode, and {ENV_PREFIX}CATALOG_ONLY=true runs none; unset one of them"
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
    def _token_for_an_attached_opencode(self) -> Settings:
        # Another container's opencode can only learn the token from the operator, as this sidecar does.
        if self.attached and self.key_custody and self.gateway_token is None:
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY_TOKEN: is required in attach mode with key custody: give opencode the same "
                f"value as {OPENCODE_TOKEN_ENV} ({MAKE_A_KEY}), or set {ENV_PREFIX}KEY_CUSTODY=false"
            )
        return self

    @model_validator(mode="after")
    def _one_source_of_gateways(self) -> Settings:
        if self.config is not None and self.catalog_url is not None:
            raise ValueError(
                f"{ENV_PREFIX}CATALOG_URL: is for the {ENV_PREFIX}GATEWAY_URL shorthand; with {ENV_PREFIX}CONFIG, "
                "set catalog_url in the gateway's [[gateways]] entry"
            )
        if self.catalog_api_key is not None and self.catalog_url is None:
            raise ValueError(f"{ENV_PREFIX}CATALOG_API_KEY: is the hub's key; set {ENV_PREFIX}CATALOG_URL too")
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
            self._gateways = (
                shorthand_gateway(
                    str(self.gateway_url),
                    self.gateway_api_key,
                    provider_id=self.provider_id,
                    provider_name=self.provider_name,
                    list_format=self.gateway_format,
                    poll_interval=self.poll_interval,
                    catalog_url=None if self.catalog_url is None else str(self.catalog_url),
                    catalog_api_key=self.catalog_api_key,
                ),
            )
        else:
            raise ValueError(
                f"{ENV_PREFIX}GATEWAY_URL: is required (or name a file of [[gateways]] in {ENV_PREFIX}CONFIG)"
            )
        return self

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        """The gateways to follow, in the operator's order; the first is the default provider."""
        return self._gateways

    @property
    def default_provider(self) -> str:
        return self._gateways[0].id

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            self.max_connections, self.header_timeout, self.body_timeout, self.max_streams, self.max_websockets
        )

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

    @property
    def sidecar_origin(self) -> str:
        """Where opencode reaches this sidecar: its own machine's (or pod's) loopback unless the
        sidecar listens on one address only."""
        return reachable_origin(self.listen_host, self.listen_port)

    @property
    def mcp_in_opencode(self) -> bool:
        """opencode's config names the MCP server, and opencode holds the token it presents there:
        always with key custody; without it, only an opencode this sidecar starts gets the token (an
        attached one could hold a random one only if the operator gave it, which custody's check
        ensures and nothing does without it)."""
        return self.mcp and (self.key_custody or not self.attached)

    def with_password(self) -> Settings:
        """These settings with an opencode password: the given one, or a fresh random one for the
        opencode the sidecar starts (an attached one has the password it has, or none)."""
        if self.opencode_password is not None or self.attached:
            return self
        return self.model_copy(update={"opencode_password": SecretStr(secrets.token_urlsafe(32))})

    def with_gateway_token(self) -> Settings:
        """These settings with the internal token of the gateway routes: the given one, or a fresh
        random one, which the sidecar hands the opencode it starts."""
        if self.gateway_token is not None:
            return self
        return self.model_copy(update={"gateway_token": SecretStr(secrets.token_urlsafe(32))})

    def held_secrets(self) -> list[str]:
        """The secrets the sidecar holds for others (the gateways' keys, opencode's password, the
        gateway token), which forwarded answers must never show. The caller's own API key is not
        one: they sent it, and redacting it would only corrupt answers that happen to contain the
        same text."""
        values = [self.gateway_api_key, self.opencode_password, self.gateway_token]
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
    fit = connections_that_fit(open_file_limits()[1], PassthroughLimits.max_streams, DEFAULT_MAX_WEBSOCKETS)
    return max(min(DEFAULT_MAX_CONNECTIONS, fit), 1)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, prefix=ENV_PREFIX)) from None
    except PydanticSettingsError as exc:
        raise SettingsError(describe_source_error(exc, prefix=ENV_PREFIX)) from None

