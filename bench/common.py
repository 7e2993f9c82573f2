"""What every benchmark shares: the row it reports, the context it runs in, and the registry.

A benchmark is a function `run(ctx: Context) -> list[Row]` registered with `@benchmark("name")`.
It starts the real servers it needs (tests/support has LiteLLM, opencode and sidecar helpers),
stops every process it started, and reports figures; it never asserts a timing. In `ctx.small`
mode (the test suite's) it does the least work that still runs every code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    benchmark: str  # "serving", "propagation", ...
    case: str  # what was measured, e.g. "sidecar /v1/models, 200 models, c=64"
    figures: dict[str, float | int | str | None]  # e.g. {"rps": 1234.5, "p50_ms": 1.2, "p99_ms": 3.4}
    peer: str | None = None  # the alternative measured in the same run, when there is one
    ratio: float | None = None  # ours / peer (or what the benchmark says it is), when there is a peer
    target: str | None = None  # the target the issue sets, in words
    met: bool | None = None  # whether the target was met, when there is one
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def number(self, key: str) -> float:
        """A figure as a number for a reading (0 when missing or None)."""
        return float(self.figures.get(key) or 0)


@dataclass
class Context:
    workdir: Path  # a scratch directory of the run's own
    small: bool  # the test suite's quick mode
    log: Callable[[str], None] = print
    extra: dict[str, Any] = field(default_factory=dict)


Benchmark = Callable[[Context], list[Row]]
BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    def register(function: Benchmark) -> Benchmark:
        BENCHMARKS[name] = function
        return function

    return register
