"""`opencode-sidecar`: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx

from sidecar.catalog import ModelList
from sidecar.gateway.client import GatewayError
from sidecar.log import configure_logging
from sidecar.memory import fix_mmap_threshold
from sidecar.opencode.spawn import OpencodeStartError
from sidecar.opencode.config import BaseConfigError, dump_config, load_base_config
from sidecar.reconcile import Reconciler
from sidecar.redact import Redactor
from sidecar.sdk import RUNTIMES, ModelsError, models
from sidecar.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from sidecar.statefiles import StatePaths
from sidecar.supervisor import Sidecar, StartError
from sidecar.wiring import gateway_clients

EXIT_SETTINGS = 2
EXIT_START = 1


def _loop_options() -> dict[str, Any]:
    """uvloop where it is installed (a dependency off Windows): its loop and transports are C, and
    every request to the API and through the gateway hop passes through them."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _fail(message: str, code: int) -> int:
    print(f"opencode-sidecar: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"config": args.config} if args.config is not None else {}
    return load_settings(**overrides)


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    configure_logging(settings.log_level, settings.secrets())
    fix_mmap_threshold()  # big blocks given back when freed (sidecar/memory.py)
    try:
        sidecar = Sidecar(settings)
    except StartError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    # The generated password is a secret too.
    configure_logging(settings.log_level, sidecar.settings.secrets())
    try:
        anyio.run(sidecar.run, backend_options=_loop_options())
    except (StartError, OpencodeStartError) as exc:
        return _fail(str(exc), EXIT_START)
    except BaseExceptionGroup as group:
        failed, _ = group.split((StartError, OpencodeStartError))
        if failed is None:
            raise
        return _fail(str(_first_leaf(failed)), EXIT_START)
    return 0


def render(args: argparse.Namespace) -> int:
    """`opencode-sidecar render`: print the opencode config the sidecar would write now."""
    try:
        settings = _settings(args)
        base = load_base_config(settings.base_config)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    except BaseConfigError as exc:
        return _fail(f"{ENV_PREFIX}BASE_CONFIG: {exc}", EXIT_SETTINGS)
    configure_logging("debug" if args.verbose else "error", settings.secrets(), stream=sys.stderr)
    failed = anyio.run(_render, settings, base)
    return EXIT_START if failed else 0


async def _render(settings: Settings, base: dict[str, Any]) -> bool:
    clients = gateway_clients(settings)
    # Reads the saved lists and registered models; writes nothing.
    reconciler = Reconciler(settings, clients, _NoListener(), StatePaths(settings.state_dir), base)
    failed = False
    try:
        for gateway_id, client in clients.items():
            try:
                reconciler.gateways[gateway_id].catalog = await client.fetch_catalog()
            except GatewayError as exc:
                failed = True
                kept = len(reconciler.gateways[gateway_id].catalog)
                print(
                    f"opencode-sidecar: gateway {gateway_id}: {exc}; showing its {kept} saved models",
                    file=sys.stderr,
                )
    finally:
        for client in clients.values():
            await client.aclose()
    # The sidecar's own part names secrets only by variable; the operator's file might not.
    print(Redactor(settings.secrets()).text(dump_config(reconciler.render())))
    return failed


class _NoListener:
    def config_written(self, expected: dict[str, set[str]]) -> None:
        pass


def list_models(args: argparse.Namespace) -> int:
    """`opencode-sidecar models`: one runtime's models as a table or as the Anthropic JSON."""
    options: dict[str, object] = {}
    if args.base_url is not None:
        options[_BASE_URL_OPTION[args.runtime]] = args.base_url
    if args.gateway_url is not None:
        if args.runtime not in ("opencode", "opencode-anthropic"):
            return _fail("--gateway-url is for --runtime opencode", EXIT_SETTINGS)
        options["gateway_url"] = args.gateway_url
    if args.timeout is not None:
        options["timeout"] = args.timeout
    try:
        client = models(**options)
    except ValueError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    # stdout is the answer: logs, if asked for, go to stderr.
    configure_logging("debug" if args.verbose else "error", client.options.secrets(), stream=sys.stderr)
    try:
        listed = client.list(args.runtime, limit=args.limit)
    except ModelsError as exc:
        return _fail(str(exc), EXIT_START)
    print(listed.model_dump_json(indent=2) if args.json else render_table(listed))
    return 0


def refresh(args: argparse.Namespace) -> int:
    """`opencode-sidecar refresh`: a running sidecar polls its gateways now; answers once applied."""
    try:
        options = models(**({"sidecar_url": args.url} if args.url is not None else {})).options
    except ValueError as exc:
        return _fail(str(exc), EXIT_SETTINGS)
    headers = {"x-api-key": options.sidecar_api_key} if options.sidecar_api_key else {}
    try:
        answer = httpx.post(
            f"{options.sidecar_url.rstrip('/')}/v1/models/refresh",
            json={"gateway": args.gateway} if args.gateway is not None else {},
            headers=headers,
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the sidecar at {options.sidecar_url}: {exc or type(exc).__name__}", EXIT_START)
    try:
        report = answer.json()
    except ValueError:
        report = None
    if answer.status_code != 200 or not isinstance(report, dict):
        reason = report.get("error", {}).get("message") if isinstance(report, dict) else None
        return _fail(f"the sidecar answered HTTP {answer.status_code}: {reason or answer.text[:200]}", EXIT_START)
    print(json.dumps(report, indent=2) if args.json else render_refresh(report))
    return 0 if all(gateway["ok"] for gateway in report["gateways"]) else EXIT_START


def render_refresh(report: dict[str, Any]) -> str:
    lines = []
    for gateway in report["gateways"]:
        name, models_now = gateway["gateway"], gateway["models"]
        if not gateway["ok"]:
            lines.append(f"{name}: poll failed ({gateway['error']}); its last good list ({models_now} models) stays")
        elif gateway["changed"]:
            change = [f"added {', '.join(gateway['added'])}"] if gateway["added"] else []
            change += [f"removed {', '.join(gateway['removed'])}"] if gateway["removed"] else []
            lines.append(f"{name}: changed, {models_now} models" + (f": {'; '.join(change)}" if change else ""))
        else:
            lines.append(f"{name}: unchanged, {models_now} models")
    if report["applied"]:
        lines.append("applied: every idle directory of opencode lists it now")
    else:
        waiting = ", ".join(report["waiting_for_idle"]) or "none"
        lines.append(f"not applied everywhere yet; waiting for prompts to end in: {waiting}")
    return "\n".join(lines)


# Which option --base-url sets, per runtime.
_BASE_URL_OPTION = {
    "anthropic": "anthropic_base_url",
    "cursor": "cursor_base_url",
    "opencode": "sidecar_url",
    "opencode-anthropic": "sidecar_url",
}


def render_table(listed: ModelList) -> str:
    """Id, display name and context window, in aligned columns; a note when the list was cut."""
    rows = [("ID", "DISPLAY NAME", "CONTEXT")]
    rows += [
        (model.id, model.display_name, "-" if model.max_input_tokens is None else str(model.max_input_tokens))
        for model in listed.data
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip() for row in rows]
    if not listed.data:
        lines.append("(no models)")
    if listed.has_more:
        lines.append(f"(more models than these {len(listed.data)}: raise --limit, or leave it out for all)")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, not {text!r}")
    return value


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
    running = commands.add_parser("run", help="start opencode and keep its models in step with the gateways")
    running.add_argument("--config", type=Path, help="a TOML file of [[gateways]] (over SIDECAR_CONFIG)")
    rendering = commands.add_parser(
        "render",
        help="print the opencode config the sidecar would write, keys shown only as references",
        description="Read every gateway once and print the opencode config the sidecar would write. "
        "A gateway that can't be read shows its saved models (exit 1).",
    )
    rendering.add_argument("--config", type=Path, help="a TOML file of [[gateways]] (over SIDECAR_CONFIG)")
    rendering.add_argument("--verbose", action="store_true", help="log what the gateways answered on stderr")
    listing = commands.add_parser(
        "models",
        help="list a runtime's models in the Anthropic Models API shape",
        description="List a runtime's models: anthropic, cursor, or opencode (a running sidecar, or a gateway).",
        epilog="Keys and URLs come from ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, CURSOR_API_KEY, CURSOR_BASE_URL, "
        "CURSOR_API_VERSION, SIDECAR_URL, SIDECAR_API_KEY and SIDECAR_GATEWAY_API_KEY; see the README.",
    )
    listing.add_argument("--runtime", choices=RUNTIMES, default="opencode", help="whose models (default: opencode)")
    listing.add_argument("--json", action="store_true", help="print the Anthropic Models API JSON instead of a table")
    listing.add_argument("--limit", type=_positive_int, help="at most this many models (default: all)")
    listing.add_argument("--base-url", help="the runtime's base URL, over its environment variable")
    listing.add_argument("--gateway-url", help="opencode only: read this OpenAI-compatible gateway, not the sidecar")
    listing.add_argument("--timeout", type=_seconds, help="seconds one request may take (default: 30)")
    listing.add_argument("--verbose", action="store_true", help="log retries and skipped entries on stderr")
    refreshing = commands.add_parser(
        "refresh",
        help="make a running sidecar poll its gateways now, and wait until opencode has the result",
        description="Ask a running sidecar (SIDECAR_URL, default http://127.0.0.1:4097; key: SIDECAR_API_KEY) to "
        "poll every gateway now, or one, and print what changed once it is applied to opencode's idle directories. "
        "Exit 1 when a gateway could not be read.",
    )
    refreshing.add_argument("--gateway", help="poll this gateway only (its id)")
    refreshing.add_argument("--url", help="the sidecar's URL, over SIDECAR_URL")
    refreshing.add_argument("--json", action="store_true", help="print the sidecar's JSON answer")
    refreshing.add_argument("--timeout", type=_seconds, default=120.0, help="seconds to wait (default: 120)")
    args = parser.parse_args(argv)
    if args.command == "refresh":
        return refresh(args)
    if args.command == "run":
        return run(args)
    if args.command == "render":
        return render(args)
    if args.command == "models":
        return list_models(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
