"""The calls a user of opencode's server makes: sessions and prompts."""

from __future__ import annotations

from typing import Any

import httpx


def create_session(opencode: httpx.Client, directory: str) -> str:
    response = opencode.post("/session", params={"directory": directory}, json={})
    response.raise_for_status()
    return response.json()["id"]


def prompt(opencode: httpx.Client, session_id: str, directory: str, model: str, text: str = "hello") -> httpx.Response:
    """A blocking prompt: the answer arrives when the assistant's message is complete."""
    provider_id, _, model_id = model.partition("/")
    return opencode.post(
        f"/session/{session_id}/message",
        params={"directory": directory},
        json={"parts": [{"type": "text", "text": text}], "model": {"providerID": provider_id, "modelID": model_id}},
    )


def answer_text(response: httpx.Response) -> str:
    """The assistant's text, or an AssertionError that says what went wrong instead."""
    assert response.status_code == 200, f"prompt failed with HTTP {response.status_code}: {response.text[:500]}"
    body: dict[str, Any] = response.json()
    error = body["info"].get("error")
    assert error is None, f"the assistant's message carries an error: {error}"
    return "".join(part.get("text", "") for part in body["parts"] if part.get("type") == "text")


def busy_sessions(opencode: httpx.Client, directory: str) -> dict[str, Any]:
    return opencode.get("/session/status", params={"directory": directory}).json()


def provider_models(opencode: httpx.Client, directory: str, provider_id: str = "litellm") -> dict[str, Any]:
    providers = opencode.get("/config/providers", params={"directory": directory}).json()["providers"]
    for provider in providers:
        if provider["id"] == provider_id:
            return provider["models"]
    return {}
