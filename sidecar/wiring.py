"""What the supervisor builds for each configured gateway: the poll's client, and the gateway
route's view of it. Also what `opencode-sidecar render` and the benchmarks build."""

from __future__ import annotations

from sidecar.gateway.client import GatewayClient
from sidecar.gateway.hub import HubFedClient
from sidecar.http.view import GatewayUpstream
from sidecar.settings import Settings


def gateway_clients(settings: Settings) -> dict[str, GatewayClient]:
    """A client per gateway, polling with the settings' timeout, retries and model cap; a gateway
    with a `catalog_url` takes its list from that hub sidecar."""
    return {
        gateway.id: (HubFedClient if gateway.catalog_url is not None else GatewayClient)(
            gateway,
            timeout=settings.gateway_timeout,
            retries=settings.gateway_retries,
            max_models=settings.max_models,
            secrets=settings.secrets(),
        )
        for gateway in settings.gateways
    }


def gateway_upstreams(settings: Settings) -> list[GatewayUpstream]:
    """Each gateway as the /gateway/<id>/ route reaches it: its key, its format and headers."""
    return [
        GatewayUpstream(
            id=gateway.id,
            api_base=gateway.api_base,
            api_key=gateway.api_key,
            anthropic=gateway.format == "anthropic" or gateway.speaks_anthropic,
            portkey=gateway.format == "portkey",
            headers=gateway.request_headers,
            secrets=gateway.secret_values,
        )
        for gateway in settings.gateways
    ]
