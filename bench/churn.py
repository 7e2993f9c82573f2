"""Disruption under churn: slow prompts generating in several directories while the gateway's list
changes again and again. How many prompts are aborted, and for how long opencode is unavailable,
with the sidecar's reload and with the two naive ways, all in the same run.

The gateway is a real LiteLLM proxy behind a `Front` whose list changes every 0.6 s, 50 times
(a model added, the oldest taken out; 3 times in small mode). Each way gets a fresh opencode:
- "sidecar": the real sidecar (SIDECAR_RELOAD=auto, polling every 1 s) supervising opencode;
- "naive restart": a controller polling the same list every 1 s that, on a change, writes the same
  rendered config and restarts opencode at once (SIGTERM to its group, then start it again);
- "naive global dispose": the same controller, calling `POST /global/dispose` at once instead.
Four prompts in two directories (two in one, small mode) with the `slow` model (streamed by fake_upstream through LiteLLM and the front) are
generating before the first change and are meant to outlast the last one. A prompt counts as
aborted when its assistant message carries an error, its request fails, or it never finishes.
Unavailability is the time a probe (`GET /global/health` with a 1 s timeout, then
`GET /config/providers` for an idle directory, every 100 ms) fails, from the first change until
the last list is listed in every directory. A static file server in a process of its own is
probed the same way (`control_unavailable_s`): on two shared cores a stalled machine shows there
too. `ok_after_churn` counts the prompts that finished without an error after the last change:
a prompt that ended before the churn would prove nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import Context, Row, benchmark
from bench.lab import SLOW, AvailabilityProbe, Check, Front, Lab, NaiveOpencode, PromptRun, lab, percentile
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import busy_sessions, create_session, provider_models
from tests.support.sidecar_process import start_sidecar

POLL_INTERVAL = 1.0
INTERVAL = 0.6  # seconds between two list changes
LISTED = 6  # churning models in the list at any time (besides `slow`): no change loses half of it
TARGET = "0 prompts aborted, 0 s of opencode unavailable"
STRATEGIES = {
    "sidecar": "sidecar (SIDECAR_RELOAD=auto: each directory reloaded when idle)",
    "restart": "naive restart (opencode restarted on every change)",
    "dispose": "naive global dispose (POST /global/dispose on every change)",
}


@dataclass
class Plan:
    prompts: int
    directories: int
    changes: int
    stream_delay: float  # seconds between two chunks of a slow answer
    margin: float  # seconds a slow answer goes on after the last change

    @property
    def stream_seconds(self) -> float:
        return self.changes * INTERVAL + self.margin


def churn_list(step: int) -> list[str]:
    """The list after `step` changes: `slow` and the last LISTED churning models."""
    return [SLOW, *(f"openai/churn-{i}" for i in range(step, step + LISTED))]


@dataclass
class Opencode:
    """One strategy's opencode, however it is run: where it answers and how to stop it."""

    url: str
    password: str
    written: Callable[[], int]  # configs written so far (each a list change seen and acted on)
    restarts: Callable[[], int]
    stop: Callable[[], None]


def _start(strategy: str, workdir: Path, front: Front, log: Callable[[str], None]) -> Opencode:
    if strategy == "sidecar":
        sidecar = start_sidecar(
            workdir, front.url, lp.MASTER_KEY, poll_interval=f"{POLL_INTERVAL:g}", reload="auto", stop_grace="2"
        )
        return Opencode(
            sidecar.opencode_url,
            sidecar.password,
            written=lambda: len(sidecar.events("opencode.config_written")),
            restarts=lambda: len(sidecar.events("child.started")) - 1,
            stop=sidecar.stop,
        )
    naive = NaiveOpencode(workdir, front, strategy, POLL_INTERVAL, log)
    try:
        naive.start()
    except BaseException:
        naive.stop()
        raise
    return Opencode(
        naive.url,
        naive.password,
        written=lambda: naive.applied,
        restarts=lambda: naive.applied if strategy == "restart" else 0,
        stop=naive.stop,
    )


def _wait(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except httpx.HTTPError:
            pass  # opencode restarting, or slow to answer
        time.sleep(step)
    return False


def _lists_everywhere(client: httpx.Client, directories: list[str], models: list[str]) -> bool:
    return all(set(provider_models(client, directory)) == set(models) for directory in directories)


def _start_prompts(client: httpx.Client, prompts: httpx.Client, directories: list[str], count: int) -> list[PromptRun]:
    """`count` slow prompts over `directories`, returned once all of them are generating."""
    runs = []
    for i in range(count):
        directory = directories[i % len(directories)]
        runs.append(PromptRun(prompts, create_session(client, directory), directory, f"litellm/{SLOW}").start())
    if not _wait(lambda: sum(len(busy_sessions(client, d)) for d in directories) == count, 60):
        raise RuntimeError(f"the slow prompts never all started: {[run.outcome for run in runs]}")
    return runs


def _change_the_list(front: Front, changes: int) -> tuple[float, float]:
    """`changes` list changes, INTERVAL apart; the monotonic times of the start and of the last."""
    started = time.monotonic()
    for step in range(1, changes + 1):
        time.sleep(max(0.0, started + step * INTERVAL - time.monotonic()))
        front.set_models(churn_list(step))
    return started, time.monotonic()


def _one_strategy(ctx: Context, strategy: str, bench_lab: Lab, plan: Plan, workdir: Path) -> dict[str, float | int | str | None]:
    front = bench_lab.front
    front.set_models(churn_list(0))
    prompt_dirs = [workdir / f"project-{i}" for i in range(plan.directories)]
    idle_dir = workdir / "idle"
    for directory in [*prompt_dirs, idle_dir]:
        directory.mkdir(parents=True, exist_ok=True)
    every_dir = [str(d) for d in [*prompt_dirs, idle_dir]]
    opencode = _start(strategy, workdir / "opencode", front, ctx.log)
    try:
        auth = ("opencode", opencode.password)
        # Checks give up soon: a request that reaches an opencode being stopped hangs until it dies.
        client = httpx.Client(base_url=opencode.url, auth=auth, timeout=3, trust_env=False)
        prompts = httpx.Client(base_url=opencode.url, auth=auth, timeout=plan.stream_seconds + 120, trust_env=False)
        with client, prompts:
            ctx.log(f"churn: {strategy}: opencode up")
            if not _wait(lambda: _lists_everywhere(client, every_dir, churn_list(0)), 60):
                raise RuntimeError(f"{strategy}: opencode never listed the first models")
            ctx.log(f"churn: {strategy}: directories loaded")
            # A session in the idle directory, as a user's open TUI has: it makes the directory known.
            create_session(client, str(idle_dir))
            runs = _start_prompts(client, prompts, [str(d) for d in prompt_dirs], plan.prompts)
            ctx.log(f"churn: {strategy}: {plan.prompts} prompts generating, {plan.changes} changes begin")
            written_before = opencode.written()
            probe = AvailabilityProbe.of_opencode(opencode.url, opencode.password, str(idle_dir)).start()
            control = AvailabilityProbe(bench_lab.control_url, [Check("/ok", 1.0)]).start()
            try:
                churn_started, churn_ended = _change_the_list(front, plan.changes)
                ctx.log(f"churn: {strategy}: changes done, waiting for the prompts")
                for run in runs:
                    run.join(max(1.0, churn_started + plan.stream_seconds + 60 - time.monotonic()))
                ctx.log(f"churn: {strategy}: prompts done: {[run.outcome for run in runs]}")
                # The probe runs until the last list is everywhere: applying the churn is over then.
                final = churn_list(plan.changes)
                settled = _wait(lambda: _lists_everywhere(client, every_dir, final), 60)
                _wait(lambda: not probe.down, 30)
            finally:
                probe.stop()
                control.stop()
            ctx.log(f"churn: {strategy}: settled {time.monotonic() - churn_ended:.1f} s after the last change")
        aborted = [run.outcome for run in runs if run.aborted]
        figures: dict[str, float | int | str | None] = {
            "prompts": plan.prompts,
            "aborted": len(aborted),
            # Finished well after the last change: it generated through the whole churn.
            "ok_after_churn": sum(1 for run in runs if not run.aborted and run.finished_at > churn_ended),
            "unavailable_s": round(probe.unavailable_s, 2),
            "longest_outage_s": round(probe.longest_s, 2),
            "providers_p90_s": round(percentile(probe.timed_seconds, 0.9), 3) if probe.timed_seconds else None,
            "providers_max_s": round(max(probe.timed_seconds), 3) if probe.timed_seconds else None,
            "control_unavailable_s": round(control.unavailable_s, 2),
            "changes": plan.changes,
            "configs_written": opencode.written() - written_before,
            "opencode_restarts": opencode.restarts(),
            "final_list_everywhere": "yes" if settled else "no",
        }
        if aborted:
            figures["how_aborted"] = ", ".join(f"{n}x {outcome}" for outcome, n in Counter(aborted).most_common())
        if probe.failures:
            figures["probe_failures"] = ", ".join(f"{n}x {what}" for what, n in probe.failures.most_common())
        ctx.log(f"churn: {strategy}: {figures}")
        return figures
    finally:
        opencode.stop()
        ctx.log(f"churn: {strategy}: stopped")


@benchmark("churn")
def run(ctx: Context) -> list[Row]:
    if ctx.small:
        plan = Plan(prompts=2, directories=1, changes=3, stream_delay=0.25, margin=3.0)
    else:
        plan = Plan(prompts=4, directories=2, changes=50, stream_delay=0.5, margin=8.0)
    results: dict[str, dict[str, float | int | str | None]] = {}
    with lab(ctx.workdir / "churn", churn_list(0), ctx.log) as bench_lab:
        bench_lab.slow_stream(plan.stream_seconds, plan.stream_delay)
        for strategy in STRATEGIES:
            results[strategy] = _one_strategy(ctx, strategy, bench_lab, plan, ctx.workdir / "churn" / strategy)
    what = (
        f"{plan.prompts} slow prompts in {plan.directories} {'directory' if plan.directories == 1 else 'directories'}, "
        f"{plan.changes} list changes "
        f"{INTERVAL:g} s apart, poll {POLL_INTERVAL:g} s"
    )
    ours = results["sidecar"]
    # Met only if the prompts really generated through the churn and the last list got everywhere.
    met = (
        ours["aborted"] == 0
        and ours["ok_after_churn"] == plan.prompts
        and ours["unavailable_s"] == 0
        and ours["final_list_everywhere"] == "yes"
    )
    rows = [
        Row(
            "churn",
            f"{what}: {STRATEGIES['sidecar']}",
            ours,
            peer=f"{STRATEGIES['restart']}; {STRATEGIES['dispose']}",
            target=TARGET,
            met=met,
            note="configs_written: list changes seen and acted on (a poll coalesces changes closer than a poll apart)",
        )
    ]
    for strategy in ("restart", "dispose"):
        rows.append(Row("churn", f"{what}: {STRATEGIES[strategy]}", results[strategy], note="the naive way, same run"))
    return rows


def reading(rows: list[Row]) -> str:
    """How each way fared, from the rows themselves."""
    found = {key: row.figures for row in rows for key in STRATEGIES if row.case.endswith(STRATEGIES[key])}
    if set(found) != set(STRATEGIES):
        return ""
    ours, restart, dispose = found["sidecar"], found["restart"], found["dispose"]
    parts = [
        f"With the sidecar {ours['aborted']} of {ours['prompts']} prompts were aborted "
        f"({ours['ok_after_churn']} finished normally after the last change) and opencode was unavailable "
        f"{ours['unavailable_s']:g} s: busy directories are left alone until their prompts end, idle ones are "
        f"reloaded with every config written ({ours['configs_written']} here). Restarting opencode on every change "
        f"aborted {restart['aborted']} ({restart.get('how_aborted', 'none')}) and left it unavailable {restart['unavailable_s']:g} s "
        f"({restart['opencode_restarts']} restarts, each a stop and a cold start, longest outage "
        f"{restart['longest_outage_s']:g} s; changes that come while it restarts are coalesced). A global dispose on "
        f"every change keeps opencode up ({dispose['unavailable_s']:g} s) but aborted {dispose['aborted']} "
        f"({dispose.get('how_aborted', 'none')}): a dispose ends whatever is generating in every directory.",
    ]
    if ours["unavailable_s"]:
        parts.append(
            f"Our unavailability is {ours['probe_failures']}; the control server in a process of its own was "
            f"unavailable {ours['control_unavailable_s']:g} s in the same window"
            + (" too, so the machine stalled." if ours["control_unavailable_s"] else ".")
        )
    return " ".join(parts)
