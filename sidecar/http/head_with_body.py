"""An answer's head and body in one write: uvicorn writes them apart, two sends per answer.

The two `transport.write` calls of uvicorn's httptools cycle (the status line and headers, then
the body) were half the CPU of a served page (py-spy, bench/serving.py: each is a send() on
uvloop's socket). Held back by one turn of the event loop at most, the head goes out with the body
written right after it, as one writev. A head whose body comes later (a stream, a HEAD answer)
goes at the next turn of the loop: no answer's head waits for a body that is slow to come.

Every write of the connection passes here, in order: whatever is written after a held head is
sent after it, whoever writes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def is_head(data: bytes) -> bool:
    """An answer's status line and headers alone, as uvicorn writes them (a `100 Continue` is not:
    the client waits for it before it sends the body). A body that happens to look like one is
    held back one turn of the loop too, and sent in order: harmless."""
    return data.startswith(_HEAD_START) and data.endswith(_HEAD_END) and data != _CONTINUE


class HeadWithBody:
    """A connection's transport as uvicorn's protocol and its request cycles write to it."""

    __slots__ = ("transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.transport.writelines((held, data))
        elif is_head(data):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.flush()
        self.transport.writelines(chunks)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():  # a client gone meanwhile: nobody to send it to
                self.transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
