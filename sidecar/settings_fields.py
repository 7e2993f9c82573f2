"""The shape of each setting on its own, as an annotated type: a field of `Settings` declares its
check with its type. A refusal is a ValueError that says what was expected and never repeats the
value, which may be a key; the variable's name is added by the loader. Checks across settings stay
with `Settings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, AnyHttpUrl, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.http.exposure import BadAddress, normal_host, normal_origin
from sidecar.gateway.config import check_provider_id
from sidecar.naming import check_aliases
from sidecar.urls import carries_credentials

# The API key grants what opencode grants, a shell: long enough that it can't be guessed, and that
# it is no common word.
MIN_API_KEY_LENGTH = 32
MAKE_A_KEY = "make one with: openssl rand -hex 32"


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, for example 127.0.0.1:4097")
    return host.strip("[]"), int(port)


def _listen(value: str) -> str:
    split_listen(value)
    return value


def _readable(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _no_key_in_url(url: AnyHttpUrl) -> AnyHttpUrl:
    if carries_credentials(str(url)):
        raise ValueError("put the key in SIDECAR_GATEWAY_API_KEY, not in the URL")
    return url


def _hub_url(url: AnyHttpUrl) -> AnyHttpUrl:
    if carries_credentials(str(url)):
        raise ValueError("put the hub's key in SIDECAR_CATALOG_API_KEY, not in the URL")
    if url.query or url.fragment:
        raise ValueError("must not have a query or a fragment")
    return url


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _none_if_blank(value: SecretStr | None) -> SecretStr | None:
    return None if value is not None and not value.get_secret_value().strip() else value


def _api_key(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be blank; unset it to turn authentication off")
    if len(value.get_secret_value()) < MIN_API_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_API_KEY_LENGTH} characters, as it grants a shell; {MAKE_A_KEY}")
    return value


def _gateway_token(value: SecretStr) -> SecretStr:
    # Anyone with opencode's shell reads it, so it is no secret from them; length keeps it unguessable
    # by everyone else on the sidecar's port.
    if len(value.get_secret_value().strip()) < MIN_API_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_API_KEY_LENGTH} characters; {MAKE_A_KEY}")
    return value


def _directory(path: Path) -> Path:
    # Relative is fine here: it is the operator's, resolved against the sidecar's working directory.
    try:
        check_directory(os.path.abspath(path))
    except InvalidDirectory as exc:
        raise ValueError(str(exc)) from None
    return path


def _model_name(value: str | None) -> str | None:
    if value is not None and (not value.strip() or not value.isprintable()):
        raise ValueError("must be a model name without control characters")
    return value or None


def _aliases(aliases: dict[str, str]) -> dict[str, str]:
    return dict(check_aliases(aliases))


def _comma_list(value: object) -> object:
    # `a,b,c`: friendlier in an environment variable than JSON.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _hosts(hosts: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(normal_host(host) for host in hosts))
    except BadAddress as exc:
        raise ValueError(f"{exc}; expected host names or addresses, comma-separated") from None


def _origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(normal_origin(origin) for origin in origins))
    except BadAddress as exc:
        raise ValueError(f"{exc}; expected origins such as https://app.example.com, comma-separated") from None


Seconds = Annotated[float, Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
ListenAddress = Annotated[str, AfterValidator(_listen)]
ReadableFile = Annotated[Path, AfterValidator(_readable)]
GatewayUrl = Annotated[AnyHttpUrl, AfterValidator(_no_key_in_url)]
# Fleet mode: the hub sidecar a gateway's list comes from.
CatalogUrl = Annotated[AnyHttpUrl, AfterValidator(_hub_url)]
ProviderId = Annotated[str, AfterValidator(check_provider_id)]
AtLeastOne = Annotated[int, AfterValidator(_at_least_one)]
# opencode's password: a blank one is none, and the sidecar makes one up.
Password = Annotated[SecretStr | None, AfterValidator(_none_if_blank)]
ApiKey = Annotated[SecretStr, AfterValidator(_api_key)]
# The token opencode's providers send on the sidecar's gateway route (key custody).
GatewayToken = Annotated[SecretStr, AfterValidator(_gateway_token)]
Directory = Annotated[Path, AfterValidator(_directory)]
ModelName = Annotated[str | None, AfterValidator(_model_name)]
ModelAliases = Annotated[dict[str, str], AfterValidator(_aliases)]
HostList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list), AfterValidator(_hosts)]
OriginList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list), AfterValidator(_origins)]
