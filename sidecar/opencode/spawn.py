"""Starting the opencode process: its binary, its environment, and the spawn that ties it to us."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import anyio
from anyio.abc import Process

from sidecar.settings import ENV_PREFIX, OPENCODE_TOKEN_ENV, Settings

LAUNCHER = Path(__file__).with_name("launch.py")
# Whatever opencode and the commands it runs create (its database, sessions, snapshots, and files
# in the project too) is its user's alone.
CHILD_UMASK = 0o077


class OpencodeStartError(Exception):
    """opencode could not be started; the message says why in one line."""


class SpawnProcess(Protocol):
    def __call__(
        self, command: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, output: IO[Any]
    ) -> Awaitable[Process]: ...


def launcher_command(command: Sequence[str], parent_pid: int) -> list[str]:
    """`command` run with an owner-only umask, and on Linux so that it dies with `parent_pid`
    (see launch.py)."""
    return [sys.executable, "-I", "-S", str(LAUNCHER), str(parent_pid), f"{CHILD_UMASK:o}", *command]


async def spawn_process(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, output: IO[Any]
) -> Process:
    # The parent-death signal follows the *thread* that forked, not the process: anyio forks in
    # the thread running the event loop, which lives as long as the sidecar does. Never spawn from
    # a worker thread (anyio.to_thread): opencode would die when that thread is retired.
    return await anyio.open_process(
        launcher_command(command, os.getpid()),
        env=dict(env),
        cwd=cwd,
        stdin=None,
        stdout=output,
        stderr=output,
        # A process group of its own, so that stopping it reaches everything it started.
        start_new_session=True,
    )


def signal_process_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group `pid` leads; one already gone is no error."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def resolve_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise OpencodeStartError(
            f"opencode not found: {ENV_PREFIX}OPENCODE_BIN={name} is not an executable file or on PATH"
        )
    return found


def serve_command(binary: str, port: int) -> list[str]:
    return [binary, "serve", "--hostname", "127.0.0.1", "--port", str(port)]


def opencode_config_dir(settings: Settings) -> Path:
    """opencode's own global config directory, under the state directory (XDG_CONFIG_HOME)."""
    return settings.state_dir / "opencode" / "config" / "opencode"


def child_environment(settings: Settings, config_path: Path) -> dict[str, str]:
    """The child's environment: ours without SIDECAR_* variables, plus what opencode needs.

    It takes Settings whole: the state directory, the password, and the gateway token (key custody)
    or every gateway's key and header variables, which is most of what Settings holds about
    opencode's side.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    opencode_home = settings.state_dir / "opencode"
    for name in ("DATA", "CONFIG", "CACHE", "STATE"):
        env[f"XDG_{name}_HOME"] = str(opencode_home / name.lower())
    env["OPENCODE_CONFIG"] = str(config_path)
    assert settings.opencode_password is not None
    env["OPENCODE_SERVER_PASSWORD"] = settings.opencode_password.get_secret_value()
    env.pop("OPENCODE_SERVER_USERNAME", None)
    # The instance plugin announces with the token (plugin.py) and the MCP entry presents it, with or
    # without custody: without, opencode's environment holds the gateway keys themselves, so the
    # token (which opens the gateway route, the MCP server and the announcement alone) gives its
    # shell nothing it has not already.
    assert settings.gateway_token is not None
    env[OPENCODE_TOKEN_ENV] = settings.gateway_token.get_secret_value()
    # A hub's key (fleet mode) is the sidecar's alone, with or without key custody: opencode never
    # asks the hub anything.
    for gateway in settings.gateways:
        if gateway.catalog_api_key_env is not None and gateway.catalog_api_key_env not in gateway.env_names:
            env.pop(gateway.catalog_api_key_env, None)
    if settings.key_custody:
        # The sidecar alone holds the gateways' keys: opencode's shell may read anything here.
        for gateway in settings.gateways:
            for name in gateway.env_names:
                env.pop(name, None)
        return env
    # The config names each gateway's key and header variables; opencode expands them itself.
    for gateway in settings.gateways:
        for name in gateway.env_names:
            if name in os.environ:
                env[name] = os.environ[name]
        if gateway.api_key_env is not None and gateway.api_key is not None:
            env[gateway.api_key_env] = gateway.api_key.get_secret_value()
    return env
