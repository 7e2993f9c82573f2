"""The gateway of `SIDECAR_GATEWAY_URL`: shorthand for a `[[gateways]]` file of one OpenAI-compatible
entry, its key in `SIDECAR_GATEWAY_API_KEY`; its list from a hub sidecar with `SIDECAR_CATALOG_URL`."""

from __future__ import annotations

from pydantic import SecretStr

from sidecar.gateway.config import OPENAI_COMPATIBLE, Gateway, api_base, hub_base

# The shorthand gateway's key reaches opencode under this name; the file holds only the reference.
API_KEY_ENV = "SIDECAR_GATEWAY_API_KEY"


def shorthand_gateway(
    url: str,
    api_key: SecretStr | None,
    *,
    provider_id: str,
    provider_name: str,
    list_format: str,
    poll_interval: float,
    catalog_url: str | None = None,
    catalog_api_key: SecretStr | None = None,
) -> Gateway:
    keyed = api_key is not None
    secrets = [key.get_secret_value() for key in (api_key, catalog_api_key) if key is not None]
    return Gateway(
        id=provider_id,
        name=provider_name,
        api_base=api_base(url),
        format=list_format,
        npm=OPENAI_COMPATIBLE,
        poll_interval=poll_interval,
        api_key_env=API_KEY_ENV if keyed else None,
        api_key=api_key,
        env_names=(API_KEY_ENV,) if keyed else (),
        secret_values=tuple(secret for secret in secrets if secret),
        # SIDECAR_CATALOG_API_KEY is a SIDECAR_* variable: opencode's environment never has it.
        catalog_url=None if catalog_url is None else hub_base(catalog_url),
        catalog_api_key=catalog_api_key,
        catalog_gateway=provider_id if catalog_url is not None else None,
    )
