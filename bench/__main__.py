"""Run the benchmarks, print a table, and write it as Markdown and JSON.

    python -m bench [--small] [--only NAME ...] [--workdir DIR] [--out DIR]

A whole run (no --small, no --only, every benchmark passing) writes docs/benchmarks.md and
docs/benchmarks.json; any other run writes them to its work directory (or --out), so the
published figures are only ever replaced by a whole run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import BENCHMARKS, Context, Row

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# In the order the issue numbers them; a module not written yet is skipped.
MODULES = (
    "bench.serving",
    "bench.propagation",
    "bench.churn",
    "bench.scale",
    "bench.idle",
    "bench.streams",
    "bench.registrations",
    "bench.custody",
    "bench.fleet",
)


def load_benchmarks() -> None:
    for name in MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def machine(mode: str) -> dict[str, Any]:
    from tests.support.sidecar_process import OPENCODE_BIN

    def first(path: str, prefix: str) -> str | None:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1].strip('"')
        except OSError:
            pass
        return None

    def command(*args: str) -> str | None:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    memory_kb = first("/proc/meminfo", "MemTotal")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "cpu": first("/proc/cpuinfo", "model name") or platform.processor() or None,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory_kb.split()[0]) / 1024 / 1024, 1) if memory_kb else None,
        "os": f"{first('/etc/os-release', 'PRETTY_NAME=') or platform.system()}, kernel {platform.release()}",
        "python": platform.python_version(),
        "opencode": command(str(OPENCODE_BIN), "--version"),
        "litellm": _version("litellm"),
        "uvicorn": _version("uvicorn"),
        "load_generator": _wrk_version() or "python-asyncio (wrk is not installed)",
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": command("git", "rev-parse", "--short", "HEAD"),
    }


def _wrk_version() -> str | None:
    try:
        # `wrk -v` prints "wrk 4.2.0 [epoll] Copyright ..." (Debian's: "wrk debian/4.1.0-3+b2 ...").
        banner = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"wrk (?:\w+/)?([\w.]+)", banner)
    return f"wrk {found.group(1)}" if found else "wrk"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def reading_of(name: str, rows: list[Row]) -> str:
    """The benchmark's own account of what limits its figures (a module-level `reading(rows)`)."""
    module = sys.modules.get(BENCHMARKS[name].__module__)
    reading = getattr(module, "reading", None)
    if reading is None or not rows:
        return ""
    try:
        return reading(rows)
    except Exception as exc:  # a broken paragraph must not lose the run's figures
        return f"(no reading: {type(exc).__name__}: {exc})"


# --- tables ---------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """One column per figure any row has, then the peer, ratio, target and note columns in use."""
    keys: list[str] = []
    for row in rows:
        keys += [key for key in row.figures if key not in keys]
    header = ["case", *keys]
    extras = [name for name in ("peer", "ratio", "target", "met") if any(getattr(row, name) is not None for row in rows)]
    header += extras + (["note"] if any(row.note for row in rows) else [])
    body = []
    for row in rows:
        cells = [row.case, *(_cell(row.figures.get(key)) if key in row.figures else "" for key in keys)]
        cells += [_cell(getattr(row, name)) if getattr(row, name) is not None else "" for name in extras]
        if header[-1] == "note":
            cells.append(row.note)
        body.append(cells)
    return header, body


def groups(rows: list[Row]) -> list[list[Row]]:
    """Runs of rows that measure alike (sharing at least half their figures), one table each."""
    runs: list[list[Row]] = []
    keys: set[str] = set()
    for row in rows:
        mine = set(row.figures)
        if runs and len(mine & keys) * 2 >= len(mine):
            runs[-1].append(row)
            keys |= mine
        else:
            runs.append([row])
            keys = mine
    return runs


def text_table(rows: list[Row]) -> str:
    header, body = table(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def markdown_table(rows: list[Row]) -> str:
    header, body = table(rows)
    escape = lambda cell: cell.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(escape(cell) for cell in line) + " |" for line in body]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    command = "scripts/bench --small" if info["mode"] == "small" else "scripts/bench"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (`python -m bench`); the figures below are one run on the machine described here.",
        "Each benchmark starts the real servers it measures (the real `opencode serve`, a real LiteLLM proxy, the",
        "sidecar as a process) and stops them. Timings on a shared machine are noisy: compare rows of one run.",
        "",
        "| machine | |",
        "| --- | --- |",
        *[f"| {key.replace('_', ' ')} | {_cell(value)} |" for key, value in info.items()],
        "",
    ]
    for name, result in report["benchmarks"].items():
        rows = [Row(**row) for row in result["rows"]]
        lines += [f"## {name}", ""]
        if result.get("doc"):
            lines += [result["doc"], ""]
        if result.get("error"):
            lines += [f"**Failed:** `{result['error']}`", ""]
        for run in groups(rows):
            lines += [markdown_table(run), ""]
        if result.get("reading"):
            lines += ["**What limits it.** " + result["reading"], ""]
        lines += [f"_{result['seconds']:.0f} s_", ""]
    return "\n".join(lines)


# --- the run --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    load_benchmarks()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the test suite's quick mode")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME", help="run only these")
    parser.add_argument("--workdir", type=Path, help="scratch directory (a new temporary one by default)")
    parser.add_argument("--out", type=Path, help="where to write benchmarks.md and .json (see above)")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mode = "small" if args.small else "full"
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    ctx = Context(workdir=workdir, small=args.small, log=lambda message: print(f"[bench] {message}", flush=True))
    report: dict[str, Any] = {"machine": machine(mode), "benchmarks": {}}
    print(f"[bench] {mode} run of {', '.join(names)} in {workdir}", flush=True)
    failed = False
    try:
        for name in names:
            started = time.monotonic()
            rows: list[Row] = []
            error = None
            ctx.log(f"{name}: start")
            try:
                rows = BENCHMARKS[name](ctx)
            except Exception as exc:
                failed = True
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                traceback.print_exc()
            seconds = time.monotonic() - started
            module = sys.modules.get(BENCHMARKS[name].__module__)
            report["benchmarks"][name] = {
                "doc": (module.__doc__ or "").strip() if module else "",
                "rows": [row.as_json() for row in rows],
                "reading": reading_of(name, rows),
                "seconds": round(seconds, 1),
                "error": error,
            }
            ctx.log(f"{name}: {len(rows)} rows in {seconds:.0f} s" + (f", FAILED: {error}" if error else ""))
            if rows:
                print(f"\n== {name} ==\n" + "\n\n".join(text_table(run) for run in groups(rows)) + "\n", flush=True)
    finally:
        for stop in reversed(ctx.extra.get("cleanups", [])):
            try:
                stop()
            except Exception:
                traceback.print_exc()

    published = not args.small and not args.only and not failed
    out = args.out or (DOCS if published else workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "benchmarks.md").write_text(markdown(report))
    print(f"[bench] wrote {out / 'benchmarks.md'} and {out / 'benchmarks.json'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
