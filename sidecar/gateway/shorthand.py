"""The gateway of `SIDECAR_GATEWAY_URL`: shorthand for a `[[gateways]]` file of one OpenAI-compatible
entry, its key in `SIDECAR_GATEWAY_API_KEY`."""

from __future__ import annotations

from pydantic import SecretStr

from sidecar.gateway.config import OPENAI_COMPATIBLE, Gateway, api_base

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
) -> Gateway:
    keyed = api_key is not None
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
        secret_values=(api_key.get_secret_value(),) if api_key is not None and api_key.get_secret_value() else (),
    )
