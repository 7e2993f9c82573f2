"""Whether opencode lists what the config written says: the versions written and confirmed.

No I/O here: the applier lists a directory's models and hands the listing in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import structlog

log = structlog.get_logger("sidecar.apply")

# Listings that differ from the config before the applier stops reloading for this version.
CONFIRM_ATTEMPTS = 5
MISMATCH_SHOWN = 20  # models named in a mismatch's log line, of each kind


# What a config written holds, per provider: its model ids, each once, as a tuple. Held until the
# next config, so a tuple's 8 bytes an id, not a set's table (10,000 models: 0.08 MiB, not 0.5;
# issue 19, RSS); a listing is compared with it without a set made of it.
Expected = dict[str, tuple[str, ...]]


def model_differences(
    expected: Mapping[str, Collection[str]], listed: dict[str, set[str]]
) -> tuple[list[str], list[str]]:
    """`provider/model` names expected but not listed, and listed but not expected."""
    wanted = {p: set(ids) for p, ids in expected.items()}
    missing = [f"{p}/{m}" for p, ids in wanted.items() for m in sorted(ids - listed.get(p, set()))]
    unexpected = [f"{p}/{m}" for p, ids in wanted.items() for m in sorted(listed.get(p, set()) - ids)]
    return missing, unexpected


def _lists_exactly(listed: set[str], ids: tuple[str, ...]) -> bool:
    return len(listed) == len(ids) and listed.issuperset(ids)  # the ids are each once


class Confirmation:
    def __init__(self) -> None:
        self.expected: Expected = {}
        self.version = 0  # of the config written
        self.applied_version = 0  # confirmed in opencode
        self._generation = 0  # of the opencode process it was confirmed in
        self._mismatches = 0

    def written(self, expected: dict[str, set[str]]) -> None:
        """A new config is on disk; opencode must end up listing exactly these models per provider."""
        self.version += 1
        self.expected = {provider: tuple(ids) for provider, ids in expected.items()}
        self._mismatches = 0

    def applied(self, generation: int) -> bool:
        return self.version > 0 and self.applied_version == self.version and self._generation == generation

    @property
    def gave_up(self) -> bool:
        return self._mismatches >= CONFIRM_ATTEMPTS

    def differs(self, listed: dict[str, set[str]]) -> bool:
        """Whether a directory's providers differ from what the written config holds."""
        return any(not _lists_exactly(listed.get(provider, set()), ids) for provider, ids in self.expected.items())

    def check(
        self, version: int, expected: Expected, listed: dict[str, set[str]], generation: int, directory: str
    ) -> bool:
        """Take `directory`'s listing, asked for while `version` (holding `expected`) was the
        latest; True when the directory is to be reloaded again."""
        if not self.differs(listed):
            self.applied_version = version
            self._generation = generation
            models = sum(len(ids) for ids in expected.values())
            log.info("opencode.applied", version=version, models=models, directory=directory)
            return False
        self._mismatches += 1
        missing, unexpected = model_differences(expected, listed)
        log.warning(
            "opencode.apply_mismatch",
            directory=directory,
            missing=missing[:MISMATCH_SHOWN],
            unexpected=unexpected[:MISMATCH_SHOWN],
            attempt=self._mismatches,
        )
        if self.gave_up:
            log.error("opencode.apply_failed", version=version, directory=directory)
            return False
        return True
