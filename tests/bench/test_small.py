"""The benchmarks' quick mode runs in the test command, so that they can't rot unnoticed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import MODULES, load_benchmarks
from bench.common import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]
# Every figure a benchmark's case must report, for the benchmarks of this file's authors.
EXPECTED = {
    "serving": {
        "sidecar": {"rps", "p50_ms", "p99_ms", "share_of_floor", "p99_of_floor"},
        "LiteLLM": {"rps", "p50_ms", "p99_ms"},
        "floor": {"rps", "p50_ms", "p99_ms"},
    },
    "scale": {
        "10 models": {"fetch_ms", "diff_ms", "render_ms", "write_ms", "reload_ms", "sidecar_rss_mib", "opencode_rss_mib"},
        "prompt": {"first_ms", "median_ms"},
    },
    "idle": {"sidecar": {"cpu_s", "cpu_pct", "rss_start_mib", "rss_end_mib", "rss_max_mib"}, "opencode": {"cpu_s"}},
    "streams": {
        "sidecar GET /session": {"streams", "rps", "p50_ms", "p99_ms", "errors", "sidecar_rss_mib"},
        "opencode GET /session": {"streams", "rps", "p50_ms", "p99_ms", "errors"},
    },
    "custody": {
        "non-streamed completion": {"p50_ms", "p99_ms", "added_p50_ms", "added_p99_ms"},
        "streamed completion's first byte": {"p50_ms", "p99_ms", "added_p50_ms"},
        "4 concurrent streams through": {"streams", "events_per_s", "events_per_s_each", "errors", "sidecar_cpu_pct"},
        "4 concurrent streams at 50 events/s each through": {"streams", "events_per_s_each", "sidecar_cpu_pct"},
        "4 concurrent streams straight": {"streams", "events_per_s", "errors"},
    },
    "registrations": {
        "10 resolves of new names": {"resolves", "ok", "total_s", "config_writes", "reloads", "max_reloads_per_directory"},
    },
    "fleet": {
        "hub": {"followers", "change_to_last_p50_ms", "change_to_last_p99_ms", "fanout_p50_ms", "gateway_requests",
                "gateway_req_per_min", "hub_cpu_ms_per_change", "hub_cpu_pct_held", "hub_rss_mib", "not_propagated"},
        "direct": {"pods", "req_per_min", "p50_ms", "p99_ms", "errors"},
    },
}


@pytest.mark.integration
@pytest.mark.timeout(660)
def test_small_mode_writes_every_row_with_numbers(tmp_path: Path) -> None:
    load_benchmarks()
    present = [name.rsplit(".", 1)[1] for name in MODULES if name.rsplit(".", 1)[1] in BENCHMARKS]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--small", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((tmp_path / "benchmarks.json").read_text())
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert report["machine"]["mode"] == "small"
    assert all(report["machine"][key] for key in ("cpu", "cores", "os", "python", "opencode", "litellm", "date"))
    assert list(report["benchmarks"]) == present
    for name, outcome in report["benchmarks"].items():
        assert outcome["error"] is None, (name, outcome["error"])
        assert outcome["rows"], f"{name} reported no row"
        assert f"## {name}" in markdown
        for row in outcome["rows"]:
            for key, value in row["figures"].items():
                assert value is not None, (name, row["case"], key)
                if isinstance(value, float):
                    assert math.isfinite(value), (name, row["case"], key)
        for prefix, figures in EXPECTED.get(name, {}).items():
            cases = [row for row in outcome["rows"] if row["case"].startswith(prefix)]
            assert cases, f"{name}: no {prefix!r} case"
            for row in cases:
                assert figures <= set(row["figures"]), (name, row["case"])
                assert row["case"] in markdown
        if name in EXPECTED:
            assert outcome["reading"], f"{name} has no reading"
    check_fleet(report["benchmarks"].get("fleet"))
    # The published run is never replaced by a small one.
    assert f"wrote {tmp_path / 'benchmarks.md'}" in result.stdout


def check_fleet(outcome: dict | None) -> None:
    """What the fleet's figures must say whatever the machine's speed: every follower learnt every
    change, and the followers cost the gateway nothing (the hub's requests are the same for 1 and
    for 10 followers, but for one poll of its own, two requests, landing in one phase)."""
    if outcome is None:
        return
    hubs = [row["figures"] for row in outcome["rows"] if row["case"].startswith("hub")]
    assert len(hubs) >= 2
    assert all(row["not_propagated"] == 0 and row["follower_errors"] == 0 for row in hubs)
    requests = [row["gateway_requests"] for row in hubs]
    assert max(requests) - min(requests) <= 2, requests
