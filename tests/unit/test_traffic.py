"""The gateway route's records: counts per status, the bound on series, hostile model names, the
last error with a stepped clock, and the Prometheus text they give, parsed back."""

from __future__ import annotations

import jsonschema
from prometheus_client.parser import text_string_to_metric_families

from sidecar.http.openapi_schemas import STATUS_SCHEMA
from sidecar.metrics import Metrics
from sidecar.traffic import FIRST_BYTE_BUCKETS, MAX_ODD_NAME, ModelTraffic

LISTED = {"gw": {"gpt-4o", "claude-sonnet", "tiny"}, "second": {"gpt-4o"}}


def listed(gateway: str, model: str) -> bool:
    return model in LISTED.get(gateway, set())


def make_traffic(**options: object) -> tuple[ModelTraffic, list[float]]:
    now = [1000.0]
    return ModelTraffic(["gw", "second"], listed, clock=lambda: now[0], **options), now  # type: ignore[arg-type]


def ok(traffic: ModelTraffic, model: str, gateway: str = "gw", **numbers: object) -> None:
    values: dict[str, object] = {"status": 200, "first_byte": 0.2, "streamed_bytes": 100, "error": None, **numbers}
    traffic.request_done(gateway, model, **values)  # type: ignore[arg-type]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(traffic: ModelTraffic) -> tuple[Samples, str]:
    metrics = Metrics()
    metrics.watch_traffic(traffic, FIRST_BYTE_BUCKETS)
    text = metrics.render().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return samples, text


def test_requests_are_counted_by_status_with_first_byte_and_bytes() -> None:
    traffic, _ = make_traffic()
    ok(traffic, "gpt-4o", first_byte=0.03, streamed_bytes=1_000)
    ok(traffic, "gpt-4o", first_byte=2.0, streamed_bytes=500)
    ok(traffic, "gpt-4o", status=429, first_byte=0.01, streamed_bytes=80, error="rate limited")
    ok(traffic, "gpt-4o", status=None, first_byte=None, streamed_bytes=0, error="connect failed")
    ok(traffic, "gpt-4o", gateway="second", first_byte=500.0)

    samples, _ = scrape(traffic)
    requests, first_byte = "opencode_sidecar_model_requests_total", "opencode_sidecar_model_first_byte_seconds"
    gw = (("gateway", "gw"), ("model", "gpt-4o"))
    assert samples[requests, (*gw, ("status", "200"))] == 2
    assert samples[requests, (*gw, ("status", "429"))] == 1
    assert samples[requests, (*gw, ("status", "none"))] == 1
    assert samples[requests, (("gateway", "second"), ("model", "gpt-4o"), ("status", "200"))] == 1
    assert samples["opencode_sidecar_model_streamed_bytes_total", gw] == 1_580
    # Three answers had a first byte: 0.01 and 0.03 within 0.05 s, 2.0 within 2.5 s; none is not one.
    assert samples[f"{first_byte}_count", gw] == 3
    assert abs(samples[f"{first_byte}_sum", gw] - 2.04) < 1e-9

    def bucket(le: str, gateway: str = "gw") -> float:
        return samples[f"{first_byte}_bucket", (("gateway", gateway), ("le", le), ("model", "gpt-4o"))]

    assert (bucket("0.025"), bucket("0.05"), bucket("2.5"), bucket("+Inf")) == (1, 2, 3, 3)
    # Past the last bound: only +Inf holds it.
    assert (bucket("120.0", "second"), bucket("+Inf", "second")) == (0, 1)

    report = traffic.report()
    assert report["gw"]["gpt-4o"]["requests"] == 4
    assert report["gw"]["gpt-4o"]["errors"] == 2
    assert report["second"]["gpt-4o"] == {"requests": 1, "errors": 0, "last_error": None}


def test_the_last_error_is_the_latest_with_its_time() -> None:
    traffic, now = make_traffic()
    ok(traffic, "tiny", status=400, error="unknown parameter")
    now[0] = 1060.5
    ok(traffic, "tiny")
    assert traffic.report()["gw"]["tiny"]["last_error"] == {"status": 400, "message": "unknown parameter", "at": 1000.0}
    ok(traffic, "tiny", status=None, first_byte=None, error="idle timeout")
    assert traffic.report()["gw"]["tiny"]["last_error"] == {"status": None, "message": "idle timeout", "at": 1060.5}
    now[0] = 1100.0
    # A 200 whose stream then broke is an error too; a status alone says what it was.
    ok(traffic, "tiny", status=200, error="stream cut")
    ok(traffic, "claude-sonnet", status=503, error=None)
    report = traffic.report()["gw"]
    assert report["tiny"]["last_error"] == {"status": 200, "message": "stream cut", "at": 1100.0}
    assert report["tiny"]["errors"] == 3
    assert report["claude-sonnet"]["last_error"] == {"status": 503, "message": "HTTP 503", "at": 1100.0}


def test_an_error_message_is_redacted_escaped_and_cut() -> None:
    def redact(text: str) -> str:
        return text.replace("sk-secret", "[redacted]")

    traffic = ModelTraffic(["gw"], listed, clock=lambda: 5.0, redact=redact)
    ok(traffic, "tiny", status=401, error="bad key sk-secret\x1b[31m\n" + "x" * 5_000)
    message = traffic.report()["gw"]["tiny"]["last_error"]["message"]
    assert message.startswith("bad key [redacted]\\x1b[31m\\n")
    assert "sk-secret" not in message and message.isprintable()
    assert len(message) <= 300 and message.endswith("...")


def test_models_no_gateway_lists_get_a_few_series_then_share_other() -> None:
    traffic, _ = make_traffic(max_unlisted=3)
    for index in range(10):
        ok(traffic, f"made-up-{index}")
    ok(traffic, "gpt-4o")  # listed: its own series, past the bound of the unlisted
    ok(traffic, "made-up-1")  # one of the first three keeps its series
    ok(traffic, "", status=400, error="no model")
    ok(traffic, "whatever", gateway="not-configured")

    report = traffic.report()
    assert sorted(report["gw"]) == ["gpt-4o", "made-up-0", "made-up-1", "made-up-2", "other", "unknown"]
    assert report["gw"]["other"]["requests"] == 7
    assert report["gw"]["made-up-1"]["requests"] == 2
    # A gateway the sidecar does not follow is not trusted as a label either.
    assert list(report["other"]) == ["whatever"] and "not-configured" not in report
    samples, _ = scrape(traffic)
    labels = {dict(key[1])["model"] for key in samples if key[0] == "opencode_sidecar_model_requests_total"}
    assert labels <= {"gpt-4o", "made-up-0", "made-up-1", "made-up-2", "other", "unknown", "whatever"}


def test_series_in_all_are_bounded_listed_or_not() -> None:
    names = {f"listed-{index}" for index in range(50)}
    traffic = ModelTraffic(["gw"], lambda gateway, model: model in names, max_series=10, max_unlisted=5)
    for name in sorted(names):
        ok(traffic, name)
    for index in range(50):
        ok(traffic, f"unlisted-{index}")
    report = traffic.report()["gw"]
    assert len(report) == 11  # ten series, and `other` past them
    assert report["other"]["requests"] == 90
    assert sum(entry["requests"] for entry in report.values()) == 100


def test_the_catalog_is_asked_once_per_new_name() -> None:
    asked: list[tuple[str, str]] = []

    def lists(gateway: str, model: str) -> bool:
        asked.append((gateway, model))
        return True

    traffic = ModelTraffic(["gw"], lists)
    for _ in range(5):
        ok(traffic, "gpt-4o")
        ok(traffic, "")
    assert asked == [("gw", "gpt-4o")]


def test_hostile_names_never_become_labels_as_they_are() -> None:
    traffic, _ = make_traffic()
    control = "evil\x1b[2J\n} 1\nfake_metric{a=\"b\"} 9\x00"
    long = "m" * 10_000
    ok(traffic, control)
    ok(traffic, long)
    ok(traffic, "   ")
    ok(traffic, "\u2028line")

    report = traffic.report()["gw"]
    assert "evil\\x1b[2J\\n} 1\\nfake_metric{a=\"b\"} 9\\x00" in report
    assert "m" * (MAX_ODD_NAME - 3) + "..." in report
    assert "\\u2028line" in report
    assert report["unknown"]["requests"] == 1
    assert all(name.isprintable() and len(name) <= 256 for name in report)

    samples, text = scrape(traffic)
    assert "\x1b" not in text and "\x00" not in text and long not in text
    # The exposition still parses, with no sample the name tried to add.
    assert not any(name.startswith("fake_metric") for name, _ in samples)
    labels = {dict(key[1])["model"] for key in samples if key[0] == "opencode_sidecar_model_requests_total"}
    assert labels == set(report)


def test_a_printable_name_as_long_as_a_model_id_may_be_is_kept() -> None:
    traffic, _ = make_traffic()
    name = "provider/" + "x" * 247  # 256 characters: catalog.MAX_MODEL_ID_LENGTH
    ok(traffic, name)
    assert name in traffic.report()["gw"]


def test_the_report_is_what_the_status_schema_says() -> None:
    traffic, _ = make_traffic()
    assert traffic.report() == {"gw": {}, "second": {}}  # every configured gateway, before any request
    ok(traffic, "gpt-4o")
    ok(traffic, "tiny", status=None, first_byte=None, error="connect failed")
    jsonschema.validate(traffic.report(), STATUS_SCHEMA["properties"]["traffic"])


def test_a_client_that_leaves_is_counted_but_not_held_against_the_model() -> None:
    # A user stopping a prompt closes the connection; the model did nothing wrong.
    traffic, _ = make_traffic()
    ok(traffic, "gpt-4o", status=None, first_byte=None, streamed_bytes=0, cancelled=True)
    ok(traffic, "gpt-4o", status=200, streamed_bytes=40, cancelled=True)
    ok(traffic, "gpt-4o", status=500, streamed_bytes=10, error="upstream broke", cancelled=True)

    samples, _ = scrape(traffic)
    gw = (("gateway", "gw"), ("model", "gpt-4o"))
    requests = "opencode_sidecar_model_requests_total"
    assert samples[requests, (*gw, ("status", "cancelled"))] == 1
    assert samples[requests, (*gw, ("status", "200"))] == 1
    report = traffic.report()["gw"]["gpt-4o"]
    assert report["requests"] == 3 and report["errors"] == 1
    assert report["last_error"]["message"] == "upstream broke"
