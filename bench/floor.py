"""The floor of the serving benchmark: a bare Starlette route returning a prepared body, under
uvicorn with the settings of the sidecar's own ApiServer (no access log, no lifespan, the same
event loop), listening on a socket uvicorn binds itself.

    python -m bench.floor --port P --body FILE     # prints "ready" once it listens

Whatever our GET /v1/models does beyond handing over bytes shows up as the gap to this one.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.servers import serving
from tests.support.litellm_proxy import free_port


def create_floor_app(body: bytes) -> Starlette:
    async def prepared(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/v1/models", prepared)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args(argv)
    # The sidecar's loop (anyio on asyncio, no uvloop) and protocol (uvicorn's default, h11 here),
    # with uvicorn binding the port itself as it does by default.
    config = uvicorn.Config(
        create_floor_app(args.body.read_bytes()),
        host="127.0.0.1",
        port=args.port,
        loop="asyncio",
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    print("ready", flush=True)
    uvicorn.Server(config).run()


@contextlib.contextmanager
def running_floor(workdir: Path, body: bytes) -> Iterator[str]:
    """The floor server in a subprocess on a free port; yields its /v1/models URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    body_path = workdir / "floor-body.json"
    body_path.write_bytes(body)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models"
    with serving(["bench.floor", "--port", str(port), "--body", str(body_path)], workdir / "floor.log", url):
        yield url


if __name__ == "__main__":
    main()
