"""The model traffic the real sidecar records on its `/gateway/<id>/` route, against the real
LiteLLM: requests by status, time to first byte and streamed bytes in `/metrics`, and each model's
counts and last error in `/v1/status`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "internal-gateway-token-for-traffic-tests-0123456789"
GATEWAY = "litellm"  # the id of the gateway SIDECAR_GATEWAY_URL stands for
LISTED = "claude-haiku-4-5"
UNLISTED = "no-such-model-on-the-gateway"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    started = start_sidecar(tmp_path_factory.mktemp("traffic"), gateway.url, gateway.master_key, gateway_token=TOKEN)
    yield started
    started.stop()


def chat(sidecar: SidecarProcess, body: dict, token: str = TOKEN) -> httpx.Response:
    return httpx.post(
        f"{sidecar.api_url}/gateway/{GATEWAY}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def scrape(sidecar: SidecarProcess) -> Samples:
    response = httpx.get(f"{sidecar.api_url}/metrics", timeout=5)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def traffic(sidecar: SidecarProcess) -> dict:
    response = httpx.get(f"{sidecar.api_url}/v1/status", timeout=5)
    assert response.status_code == 200
    return response.json()["traffic"]


def message(model: str, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def test_answers_errors_and_streams_are_counted_per_model(sidecar: SidecarProcess, gateway: lp.LiteLLMProxy) -> None:
    assert traffic(sidecar) == {GATEWAY: {}}
    before = time.time()

    plain = chat(sidecar, message(LISTED))
    assert plain.status_code == 200, plain.text
    with httpx.stream(
        "POST",
        f"{sidecar.api_url}/gateway/{GATEWAY}/v1/chat/completions",
        json=message(LISTED, stream=True),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    ) as streamed:
        assert streamed.status_code == 200
        streamed_bytes = sum(len(chunk) for chunk in streamed.iter_raw())
    assert streamed_bytes > 0
    # LiteLLM refuses a model it does not serve with a 400.
    refused = chat(sidecar, message(UNLISTED))
    assert refused.status_code == 400, refused.text

    # Recorded once each request is over: the route records after the last byte went out.
    def recorded() -> dict | None:
        report = traffic(sidecar)[GATEWAY]
        if report.get(LISTED, {}).get("requests") == 2 and report.get(UNLISTED, {}).get("requests") == 1:
            return report
        return None

    report = sidecar.wait_for(recorded, 10, "three requests in /v1/status")
    assert report[LISTED] == {"requests": 2, "errors": 0, "last_error": None}
    assert report[UNLISTED]["errors"] == 1
    last_error = report[UNLISTED]["last_error"]
    assert last_error["status"] == 400 and last_error["message"]
    assert before - 1 <= last_error["at"] <= time.time() + 1
    status_text = httpx.get(f"{sidecar.api_url}/v1/status", timeout=5).text
    assert gateway.master_key not in status_text and TOKEN not in status_text

    samples = scrape(sidecar)
    listed = (("gateway", GATEWAY), ("model", LISTED))
    unlisted = (("gateway", GATEWAY), ("model", UNLISTED))
    assert samples["opencode_sidecar_model_requests_total", (*listed, ("status", "200"))] == 2
    assert samples["opencode_sidecar_model_requests_total", (*unlisted, ("status", "400"))] == 1
    assert samples["opencode_sidecar_model_first_byte_seconds_count", listed] == 2
    assert 0 < samples["opencode_sidecar_model_first_byte_seconds_sum", listed] < 60
    # At least the streamed answer's bytes, and the plain one's.
    assert samples["opencode_sidecar_model_streamed_bytes_total", listed] >= streamed_bytes + len(plain.content)


def test_a_refused_token_records_nothing(sidecar: SidecarProcess) -> None:
    wrong = chat(sidecar, message("refused-model"), token="x" * 40)
    assert wrong.status_code in (401, 403)
    # A request let through afterwards shows up, so the refused one had its chance to.
    chat(sidecar, message("after-the-refusal"))
    def later_recorded() -> dict | None:
        report = traffic(sidecar)[GATEWAY]
        return report if "after-the-refusal" in report else None

    report = sidecar.wait_for(later_recorded, 10, "the later request in /v1/status")
    assert "refused-model" not in report and "other" not in report


def test_a_hostile_model_name_is_escaped_in_both_reports(sidecar: SidecarProcess) -> None:
    hostile = "evil\x1b[2J\n} 1\nfake_metric 9 " + "x" * 1_000
    chat(sidecar, message(hostile))

    def seen() -> list[str]:
        return [name for name in traffic(sidecar)[GATEWAY] if name.startswith("evil") or name == "unknown"]

    names = sidecar.wait_for(seen, 10, "the hostile request in /v1/status")
    assert all(name.isprintable() and len(name) <= 256 for name in names)
    text = httpx.get(f"{sidecar.api_url}/metrics", timeout=5).text
    assert "\x1b" not in text and "x" * 300 not in text
    assert not any(name.startswith("fake_metric") for name, _ in scrape(sidecar))
