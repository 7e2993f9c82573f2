import json

import structlog

from sidecar.log import SecretScrubber, configure_logging
from sidecar.redact import REDACTED


def test_scrubber_replaces_secrets_anywhere() -> None:
    scrub = SecretScrubber(["sk-key-123", "pw-456"])
    event = scrub(None, "info", {
        "event": "gateway.poll_failed",
        "error": "401 for key sk-key-123",
        "nested": {"list": ["pw-456", 3, None], "n": 1},
        "other": ValueError("pw-456 in an exception"),
    })
    assert event["error"] == f"401 for key {REDACTED}"
    assert event["nested"] == {"list": [REDACTED, 3, None], "n": 1}
    assert "pw-456" not in event["other"]


def test_log_lines_are_json_without_secrets(capsys) -> None:
    configure_logging("info", ["sk-key-123"])
    try:
        structlog.get_logger("t").warning("gateway.poll_failed", error="bad key sk-key-123")
    finally:
        structlog.reset_defaults()
    line = json.loads(capsys.readouterr().out.strip())
    assert line["event"] == "gateway.poll_failed" and line["level"] == "warning"
    assert "sk-key-123" not in json.dumps(line)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTimers:
    """The event loop's call_later, run by hand."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pending: list[tuple[float, object]] = []

    def __call__(self, delay: float, callback) -> bool:
        self.pending.append((self.clock.now + delay, callback))
        return True

    def run_due(self) -> None:
        due = [cb for at, cb in self.pending if at <= self.clock.now]
        self.pending = [(at, cb) for at, cb in self.pending if at > self.clock.now]
        for callback in due:
            callback()


def make_limiter(clock: FakeClock, timers=None):
    from sidecar.log import RepeatLimiter

    summaries: list[tuple[str, str, int, float]] = []
    limiter = RepeatLimiter(
        burst=3,
        window=10.0,
        clock=clock,
        schedule=timers or (lambda _delay, _callback: False),
        write_summary=lambda *summary: summaries.append(summary),
    )
    return limiter, summaries


def passes(limiter, level: str, name: str, **fields) -> bool:
    try:
        limiter(None, level, {"event": name, "level": level, **fields})
    except structlog.DropEvent:
        return False
    return True


def test_repeated_warnings_are_cut_to_a_burst_per_window_with_a_summary() -> None:
    clock = FakeClock()
    timers = FakeTimers(clock)
    limiter, summaries = make_limiter(clock, timers)
    written = [passes(limiter, "warning", "api.header_timeout", client=f"127.0.0.1:{port}") for port in range(1000)]
    assert written[:3] == [True, True, True] and not any(written[3:])
    assert summaries == []
    assert len(timers.pending) == 1  # one timer per window, not one per dropped line

    clock.now += 9.9
    timers.run_due()
    assert summaries == []
    clock.now += 0.1
    timers.run_due()
    assert summaries == [("warning", "api.header_timeout", 997, 10.0)]

    # A new window writes again.
    assert passes(limiter, "warning", "api.header_timeout")


def test_the_limit_is_per_event_and_level_and_spares_info_and_debug() -> None:
    clock = FakeClock()
    limiter, _ = make_limiter(clock)
    for _ in range(3):
        assert passes(limiter, "warning", "gateway.poll_failed")
    assert not passes(limiter, "warning", "gateway.poll_failed")
    assert passes(limiter, "error", "gateway.poll_failed")
    assert passes(limiter, "warning", "passthrough.failed")
    assert all(passes(limiter, "info", "opencode.reloaded") for _ in range(100))
    assert all(passes(limiter, "debug", "api.request") for _ in range(100))


def test_without_an_event_loop_the_summary_comes_with_the_next_repeat() -> None:
    clock = FakeClock()
    limiter, summaries = make_limiter(clock)
    for _ in range(5):
        passes(limiter, "error", "stdlib.asyncio")
    assert summaries == []
    clock.now += 10
    assert passes(limiter, "error", "stdlib.asyncio")
    assert summaries == [("error", "stdlib.asyncio", 2, 10.0)]


def test_a_quiet_window_writes_no_summary() -> None:
    clock = FakeClock()
    timers = FakeTimers(clock)
    limiter, summaries = make_limiter(clock, timers)
    for _ in range(3):
        passes(limiter, "warning", "child.health_check_failed")
    clock.now += 60
    timers.run_due()
    limiter.flush()
    assert summaries == [] and timers.pending == []


def test_stdlib_records_become_json_lines_and_are_rate_limited(capsys) -> None:
    import logging

    from sidecar.log import StdlibBridge

    configure_logging("info", ["sk-key-123"])
    try:
        error = OSError(24, "Too many open files")
        for _ in range(200):
            logging.getLogger("asyncio").error(
                "socket.accept() out of system resources\nsocket: <sk-key-123>", exc_info=error
            )
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, StdlibBridge)]:
            root.removeHandler(handler)
        structlog.reset_defaults()
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert len(lines) == 5
    assert {line["event"] for line in lines} == {"stdlib.asyncio"}
    assert lines[0]["level"] == "error"
    assert lines[0]["message"] == "socket.accept() out of system resources"
    assert "Too many open files" in lines[0]["exception"]
    assert "sk-key-123" not in out.out and out.err == ""
