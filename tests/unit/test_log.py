import json

import structlog

from sidecar.log import REDACTED, SecretScrubber, configure_logging


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
