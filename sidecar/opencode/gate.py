"""No prompt starts in a directory between the applier's idle check and its dispose.

The applier asks opencode whether a directory is busy, then disposes it: two calls, and a prompt
started between them would be aborted. For prompts through the sidecar's pass-through, this gate
closes that window from both sides:
- while the applier holds a directory (busy check + dispose), a prompt for it waits (bounded: past
  `max_wait` it goes on, with a warning, rather than hang a client on a stuck reload);
- a prompt being started counts as busy, so the applier does not take the directory then: from
  before it is forwarded until opencode has reported its session's status on /global/event (then
  opencode's own busy status covers it), or `settle` seconds after its answer if no report comes.
  A `prompt_async` is answered before opencode starts the prompt: under load (200 prompts queued on
  2 cores) the start came more than 1 s after the answer, and 2 of 200 prompts were aborted by a
  reload whose busy check came in between (measured).
Prompts sent straight to opencode's port are not seen here; opencode's own busy status covers
those that have started.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import anyio
import structlog

from sidecar.opencode.handle import Clock, Sleep

log = structlog.get_logger("sidecar.apply")

PROMPT_WAIT = 5.0  # seconds a prompt waits for its directory's reload before it goes on
PROMPT_SETTLE = 10.0  # seconds after a prompt start's answer that its session's status report is waited for


class ReloadGate:
    def __init__(
        self,
        default_directory: Callable[[], str],
        *,
        max_wait: float = PROMPT_WAIT,
        settle: float = PROMPT_SETTLE,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        # A prompt that names no directory works in opencode's own.
        self._default = default_directory
        self._max_wait = max_wait
        self._settle = settle
        self._clock = clock
        self._sleep = sleep
        self._held: dict[str, anyio.Event] = {}  # directories being reloaded; set when released
        self._starting: Counter[str] = Counter()  # prompt starts in flight, per directory
        # Prompt starts answered whose session opencode has not reported since: when to stop waiting.
        self._unconfirmed: dict[tuple[str, str], float] = {}
        self._reported: set[str] = set()  # sessions reported while their start was in flight
        self.waits_timed_out = 0

    def held(self, directory: str) -> bool:
        return directory in self._held

    def starting(self, directory: str) -> bool:
        """Whether a prompt for `directory` is being started through the sidecar, or was and
        opencode has not reported its session since."""
        if self._starting[directory]:
            return True
        now = self._clock()
        for (where, session), until in list(self._unconfirmed.items()):
            if now >= until:
                del self._unconfirmed[(where, session)]
            elif where == directory:
                return True
        return False

    def session_reported(self, session: str) -> None:
        """opencode reported `session`'s status (/global/event): a prompt started there is covered
        by opencode's own busy status from now on."""
        for key in [key for key in self._unconfirmed if key[1] == session]:
            del self._unconfirmed[key]
        if any(self._starting.values()):
            # The report may come before the start's answer: remembered until that answer.
            self._reported.add(session)

    async def enter_prompt(self, directory: str | None, session: str = "") -> Callable[[], None]:
        """Wait while `directory` is being reloaded (at most `max_wait`), then count a prompt start
        there (in `session`) until the returned function is called (once its answer is complete,
        or failed) and opencode has reported the session."""
        directory = directory or self._default()
        deadline = self._clock() + self._max_wait
        while (released := self._held.get(directory)) is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                self.waits_timed_out += 1
                log.warning("passthrough.reload_wait_timed_out", directory=directory, waited=self._max_wait)
                break
            await self._wait(released, remaining)
        self._starting[directory] += 1
        done = False

        def leave() -> None:
            nonlocal done
            if done:
                return
            done = True
            self._starting[directory] -= 1
            if not self._starting[directory]:
                del self._starting[directory]
            if session in self._reported:
                self._reported.discard(session)
            else:
                self._unconfirmed[(directory, session)] = self._clock() + self._settle
            if not any(self._starting.values()):
                self._reported.clear()

        return leave

    def try_hold(self, directory: str) -> bool:
        """Close `directory` to new prompts for a reload; False (nothing held) while one is starting."""
        if directory in self._held or self.starting(directory):
            return False
        self._held[directory] = anyio.Event()
        return True

    def release(self, directory: str) -> None:
        released = self._held.pop(directory, None)
        if released is not None:
            released.set()

    async def _wait(self, released: anyio.Event, timeout: float) -> None:
        async with anyio.create_task_group() as group:

            async def give_up() -> None:
                await self._sleep(timeout)
                group.cancel_scope.cancel()

            group.start_soon(give_up)
            await released.wait()
            group.cancel_scope.cancel()
