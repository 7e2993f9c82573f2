"""Known secret values blanked out of whatever the sidecar passes on: log lines, a server's error
reason, the rendered opencode config and forwarded answers. One rule for all of them, so that they
cannot drift apart: every secret that is not empty counts, whatever its length, and each occurrence
becomes `[redacted]`. Pure and stdlib only: the SDK uses it too, without the daemon."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "[redacted]"
_REDACTED_BYTES = REDACTED.encode()


class Redactor:
    """Replaces every occurrence of each secret, longest first: a secret that contains another is
    blanked whole, not left with a tail showing around the shorter one's marker."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._encoded = tuple(secret.encode() for secret in self.secrets)
        # In bytes, as a stream is cut: a stream holds back one byte less than this (see `stream`).
        self.longest = max((len(secret) for secret in self._encoded), default=0)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        return value

    def data(self, value: bytes) -> bytes:
        for secret in self._encoded:
            value = value.replace(secret, _REDACTED_BYTES)
        return value

    def stream(self) -> StreamRedactor:
        """A redactor for one byte stream, chunk by chunk."""
        return StreamRedactor(self)


class StreamRedactor:
    """One byte stream redacted as it passes: the last bytes of each chunk (one fewer than the
    longest secret) wait for the next chunk, so that a secret split between two chunks is still
    found. `feed` each chunk and pass on what it returns; `end` gives the bytes held back."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._hold = max(redactor.longest - 1, 0)
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._redactor.data(self._tail + chunk)
        cut = max(len(data) - self._hold, 0)
        self._tail = data[cut:]
        return data[:cut]

    def end(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail
