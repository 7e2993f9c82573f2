"""Match a requested model name to the models the gateways list, the way people write names (pure).

A name is compared with every listed model at each step below, strictest first. Each step folds
what the steps before it fold, plus one thing more. The first step at which anything matches
decides: one model is the match; several are ambiguous (the resolver answers 409 naming them);
none lets the next step try.

1. exact: the id as listed;
2. case: `Claude-Sonnet-4-5` is `claude-sonnet-4-5`;
3. separators: `.`, `_` and spaces are `-` (`claude-sonnet-4.5`, `Claude Sonnet 4.5`);
4. provider prefixes: a known provider's prefix is dropped, repeatedly (`anthropic/`,
   `openrouter/anthropic/`, `vertex_ai/`, `bedrock/`, Bedrock's `anthropic.` and `us.anthropic.`,
   `meta-llama/`, `Qwen/` ...), from the name and from listed ids (OpenRouter lists
   `anthropic/claude-sonnet-4.5`, LiteLLM's wildcard routes `openai/gpt-4o`);
5. dates: a date suffix is dropped (`-20250929`, `-2025-09-29`, `@20250929`), with Bedrock's
   version suffix (`-v1:0`) after it;
6. latest: a `-latest` suffix is dropped;
7. display names: the name against each listed display name (OpenRouter's `Anthropic: ` vendor
   dropped), both folded as above;
8. canonical slugs: the name against OpenRouter's `canonical_slug`, folded as above.

Prefixes come before dates so that an undated listed id (`openai/gpt-4o`) wins over its dated
snapshots (`openai/gpt-4o-2024-08-06`) for `gpt-4o`: at the dates step all three would match.
Two listings of one id (the same model on two gateways) are one match: the first gateway's.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum


class Step(IntEnum):
    EXACT = 1
    CASE = 2
    SEPARATORS = 3
    PROVIDER = 4
    DATES = 5
    LATEST = 6
    DISPLAY_NAME = 7
    CANONICAL_SLUG = 8


# Prefixes providers and routers put before a model's own name. A prefix is dropped only when a
# model name follows it, so `deepseek/deepseek-r1` loses one, not two.
PROVIDER_PREFIXES = (
    "anthropic", "openai", "azure", "azure_ai", "google", "gemini", "vertex_ai", "vertex_ai_beta", "models",
    "bedrock", "bedrock_converse", "openrouter", "meta-llama", "meta", "mistralai", "mistral", "codestral",
    "deepseek", "deepseek-ai", "qwen", "x-ai", "xai", "groq", "together_ai", "togethercomputer", "fireworks_ai",
    "ollama", "ollama_chat", "hosted_vllm", "vllm", "huggingface", "cohere", "perplexity", "nvidia_nim",
    "nvidia", "amazon", "moonshotai", "z-ai", "zai", "cerebras", "deepinfra", "litellm_proxy",
)
# Bedrock writes the vendor with a dot (`anthropic.claude-...`), and its cross-region inference
# profiles put a region before it (`us.anthropic.claude-...`).
BEDROCK_VENDORS = ("anthropic", "meta", "mistral", "amazon", "cohere", "ai21", "deepseek", "qwen", "openai")
_PREFIX = re.compile(
    r"^(?:(?:" + "|".join(map(re.escape, PROVIDER_PREFIXES)) + r")/"
    r"|(?:(?:us|eu|apac|global)\.)?(?:" + "|".join(BEDROCK_VENDORS) + r")\.(?=[a-z]))",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"[._\s]+")
_DASHES = re.compile(r"-{2,}")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_DATE = re.compile(r"[-@](?:\d{8}|\d{4}-\d{2}-\d{2})$")
_LATEST = re.compile(r"-latest$")
# OpenRouter's display names: "Anthropic: Claude Sonnet 4.5".
_VENDOR_LABEL = re.compile(r"^[^:/]{1,40}:\s+")


def strip_prefixes(name: str) -> str:
    while (match := _PREFIX.match(name)) and match.end() < len(name):
        name = name[match.end():]
    return name


def key(name: str, step: Step) -> str:
    """`name` folded as far as `step` folds it (the display-name and slug steps fold as far as latest)."""
    text = strip_prefixes(name) if step >= Step.PROVIDER else name
    if step >= Step.CASE:
        text = text.casefold()
    if step >= Step.SEPARATORS:
        text = _DASHES.sub("-", _SEPARATORS.sub("-", text)).strip("-")
    if step >= Step.DATES:
        text = _DATE.sub("", _BEDROCK_VERSION.sub("", text))
    if step >= Step.LATEST:
        text = _LATEST.sub("", text)
    return text


def loosest(name: str) -> str:
    return key(name, Step.LATEST)


def display_key(name: str) -> str:
    return loosest(_VENDOR_LABEL.sub("", name))


# Slotted: one is held per listed model in the match index, 72 bytes without a __dict__, one
# allocation instead of two (issue 19, RSS).
@dataclass(frozen=True, slots=True)
class Listed:
    """One listed model: the id the caller gets back, the gateway's own id (what is compared), and
    what its gateway says of it beside."""

    public_id: str
    model_id: str
    gateway: str = ""
    display_name: str | None = None
    canonical_slug: str | None = None


@dataclass(frozen=True)
class Match:
    """The listed models the first matching step found (empty: none did)."""

    found: tuple[Listed, ...] = ()
    step: Step | None = None

    @property
    def unique(self) -> Listed | None:
        return self.found[0] if len(self.found) == 1 else None


def _same_model_once(found: Iterable[Listed]) -> tuple[Listed, ...]:
    # The same model id on several gateways is one model: the first gateway's, in the given order.
    firsts: dict[str, Listed] = {}
    for listed in found:
        firsts.setdefault(listed.model_id, listed)
    return tuple(firsts.values())


@dataclass
class MatchIndex:
    """The listed models (in the operator's order of gateways), indexed per step on first use."""

    listed: tuple[Listed, ...]
    _by_step: dict[Step, dict[str, list[Listed]]] = field(default_factory=dict)

    def _keys(self, step: Step) -> dict[str, list[Listed]]:
        index = self._by_step.get(step)
        if index is None:
            index = {}
            for listed in self.listed:
                for listed_key in self._listed_keys(listed, step):
                    index.setdefault(listed_key, []).append(listed)
            self._by_step[step] = index
        return index

    @staticmethod
    def _listed_keys(listed: Listed, step: Step) -> list[str]:
        if step == Step.DISPLAY_NAME:
            return [display_key(listed.display_name)] if listed.display_name else []
        if step == Step.CANONICAL_SLUG:
            return [loosest(listed.canonical_slug)] if listed.canonical_slug else []
        return [key(listed.model_id, step)]

    def match(self, name: str, within: Callable[[Listed], bool] = lambda listed: True) -> Match:
        for step in Step:
            wanted = display_key(name) if step == Step.DISPLAY_NAME else key(name, min(step, Step.LATEST))
            found = [listed for listed in self._keys(step).get(wanted, ()) if within(listed)]
            if found:
                return Match(_same_model_once(found), step)
        return Match()

    def closest(self, name: str, limit: int = 3, within: Callable[[Listed], bool] = lambda listed: True) -> list[str]:
        """Up to `limit` public ids whose folded ids look most like the folded name (difflib)."""
        by_key: dict[str, str] = {}
        for listed_key, found in self._keys(Step.LATEST).items():
            public_ids = [listed.public_id for listed in found if within(listed)]
            if public_ids:
                by_key[listed_key] = public_ids[0]
        close = difflib.get_close_matches(loosest(name), list(by_key), n=limit, cutoff=0.6)
        return [by_key[found] for found in close]


def covered_by_route(model_id: str, routes: Iterable[str]) -> str | None:
    """The first wildcard route (LiteLLM's `openai/*`, `anthropic/claude-*`) whose pattern covers
    `model_id`, matched as the gateway matches it: `*` is any text, everything else literal.
    Without a regular expression: the routes are the gateway's word, and `a*a*a*...` as a regex
    backtracks for as long as a caller's name is long."""
    return next((route for route in routes if _glob(route, model_id)), None)


def _glob(pattern: str, text: str) -> bool:
    first, *middle_and_last = pattern.split("*")
    if not middle_and_last:
        return text == pattern
    *middle, last = middle_and_last
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for part in middle:  # each part at its first place after the one before: enough for `*` alone
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
