"""Which requests to `/mcp` are the MCP server's (pure): asked by the route, by the key guard
before the internal token may pass, and by the config renderer for the path. Apart from mcp.py,
so that neither the guards nor `opencode-sidecar render` import the MCP SDK (about 1 s of CPU)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

MCP_PATH = "/mcp"


def is_mcp_request(scope: Scope) -> bool:
    """A request of the MCP transport at `/mcp`: one that accepts an event stream (the transport's
    POST and GET must) or names an MCP session or protocol version. opencode's own `/mcp` routes,
    reached through the pass-through, are asked for JSON by its clients, and carry neither."""
    if scope["type"] != "http" or scope["path"] != MCP_PATH:
        return False
    headers = Headers(scope=scope)
    if "mcp-protocol-version" in headers or "mcp-session-id" in headers:
        return True
    return any("text/event-stream" in accept.lower() for accept in headers.getlist("accept"))
