"""`opencode-sidecar`: the command line."""

from __future__ import annotations

import argparse
import sys

import anyio

from sidecar.log import configure_logging
from sidecar.opencode.child import OpencodeStartError
from sidecar.settings import SettingsError, load_settings
from sidecar.supervisor import Sidecar, StartError

EXIT_SETTINGS = 2
EXIT_START = 1


def _fail(message: str, code: int) -> int:
    print(f"opencode-sidecar: {message}", file=sys.stderr)
    return code


def run() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    configure_logging(settings.log_level, settings.secrets())
    try:
        sidecar = Sidecar(settings)
    except StartError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    # The generated password is a secret too.
    configure_logging(settings.log_level, sidecar.settings.secrets())
    try:
        anyio.run(sidecar.run)
    except (StartError, OpencodeStartError) as exc:
        return _fail(str(exc), EXIT_START)
    except BaseExceptionGroup as group:
        failed, _ = group.split((StartError, OpencodeStartError))
        if failed is None:
            raise
        return _fail(str(_first_leaf(failed)), EXIT_START)
    return 0


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="opencode-sidecar",
        description="Runs opencode and keeps its provider map in step with an LLM gateway.",
        epilog="Settings come from SIDECAR_* environment variables; see the README.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start opencode and keep its models in step with the gateway")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
