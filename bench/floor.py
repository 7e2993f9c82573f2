"""The floors of the serving benchmark: a bare Starlette route returning a prepared body, under each
Python serving stack this machine can run, so that the sidecar is compared with the fastest, not
with the one it happens to use.

    python -m bench.floor --stack STACK --port P --body FILE     # prints "ready" once it listens

Stacks: `h11` (uvicorn's pure-Python protocol on asyncio's loop: what the sidecar served with up to
issue 15), `httptools` (uvicorn with httptools and uvloop: what the sidecar serves with now), and
`granian` (a Rust HTTP server running the same ASGI app, one worker, on uvloop). No access log, no
lifespan, one process each, as the sidecar. Whatever our GET /v1/models does beyond handing over
bytes shows up as the gap to them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.servers import serving
from tests.support.litellm_proxy import free_port

STACKS = ("h11", "httptools", "granian")
# The floor's body, for granian, which imports the application itself (`--factory`).
BODY_ENV = "BENCH_FLOOR_BODY"


def create_floor_app(body: bytes) -> Starlette:
    async def prepared(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/v1/models", prepared)])


def app_from_env() -> Starlette:
    return create_floor_app(Path(os.environ[BODY_ENV]).read_bytes())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=STACKS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.stack == "granian":
        os.environ[BODY_ENV] = str(args.body)
        print("ready", flush=True)
        os.execv(
            sys.executable,
            [
                sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                "--port", str(args.port), "--workers", "1", "--loop", "uvloop", "--no-access-log",
                "--log-level", "warning", "bench.floor:app_from_env",
            ],
        )
    uvloop = args.stack == "httptools"
    config = uvicorn.Config(
        create_floor_app(args.body.read_bytes()),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop" if uvloop else "asyncio",
        http="httptools" if uvloop else "h11",
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=False,
    )
    print("ready", flush=True)
    uvicorn.Server(config).run()


@contextlib.contextmanager
def running_floor(workdir: Path, body: bytes, stack: str) -> Iterator[str]:
    """The floor server of `stack` in a subprocess on a free port; yields its /v1/models URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    body_path = workdir / "floor-body.json"
    body_path.write_bytes(body)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models"
    command = ["bench.floor", "--stack", stack, "--port", str(port), "--body", str(body_path)]
    with serving(command, workdir / f"floor-{stack}.log", url):
        yield url


if __name__ == "__main__":
    main()
