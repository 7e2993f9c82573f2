"""Servers several benchmarks use, started once per run, and what /proc says about a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import Context
from tests.support import litellm_proxy as lp

# The small gateway of the serving and idle benchmarks: two chat models, as a team might start with.
TWO_MODELS = [lp.mock_model("claude-sonnet-4-5"), lp.mock_model("gpt-4o-mini")]
# A LiteLLM wildcard route: its /v1/models lists every OpenAI model LiteLLM knows (about 200).
WILDCARD = [lp.model_entry("openai/*", {"model": "openai/*", "api_key": "x", "mock_response": "hi"})]


ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serving(module_args: Sequence[str], log_path: Path, ready_url: str, *, stdout_to_log: bool = False) -> Iterator[None]:
    """`python -m <module_args>` from the checkout, its stderr in `log_path`, until `ready_url`
    answers 200 (30 s at most); stopped, and killed if it lingers, when the block ends."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log if stdout_to_log else subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module_args[0]} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def on_exit(ctx: Context, stop: Callable[[], object]) -> None:
    """Have the runner call `stop` when the whole run ends, errors included."""
    ctx.extra.setdefault("cleanups", []).append(stop)


def shared_litellm(ctx: Context, name: str, models: Sequence[dict]) -> lp.LiteLLMProxy:
    """A LiteLLM proxy serving `models`, started on first use and stopped when the run ends
    (its start costs 10 to 20 s, nearly all of it importing litellm)."""
    proxies: dict[str, lp.LiteLLMProxy] = ctx.extra.setdefault("litellm_proxies", {})
    if name not in proxies:
        ctx.log(f"starting LiteLLM ({name})")
        proxy = lp.start_proxy(ctx.workdir / f"litellm-{name}", models)
        proxies[name] = proxy
        on_exit(ctx, lambda: lp.stop_proxy(proxy))
    return proxies[name]


# --- /proc ----------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def group_pids(pgid: int) -> list[int]:
    """Every live process of a process group (opencode's children live in its group)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    total = 0.0
    for pid in group_pids(pgid):
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # exited meanwhile
    return total


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of one process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")
