"""What the rest of the sidecar may ask of opencode's process, whoever runs it.

Two things satisfy it: `OpencodeChild` (the sidecar started opencode and owns it) and
`AttachedOpencode` (opencode runs elsewhere and is only watched). The applier, the supervisor and
the metrics read it; only its own `run()` touches the process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from anyio.abc import TaskStatus

# Time as the classes here read it, passed in so that tests step it instead of waiting on it.
Clock = Callable[[], float]  # seconds, monotonic
Sleep = Callable[[float], Awaitable[None]]


class OpencodeHandle(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def generation(self) -> int:
        """Counts processes that became healthy: a new one read the config file as it started."""
        ...

    @property
    def restarts(self) -> int: ...

    @property
    def pid(self) -> int | None: ...

    async def wait_healthy(self) -> None: ...

    def request_restart(self) -> None:
        """Start a new process (SIDECAR_RELOAD=restart); only the child can."""
        ...

    def report(self) -> dict[str, Any]:
        """The process as `GET /v1/status` shows it."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = ...) -> None: ...

    async def stop(self) -> None: ...
