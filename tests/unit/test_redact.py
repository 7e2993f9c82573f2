import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.redact import REDACTED, Redactor


def test_every_occurrence_of_every_secret_is_blanked() -> None:
    redact = Redactor(["sk-abc", "pw-1"])
    assert redact.text('{"apiKey":"sk-abc","x":"pw-1pw-1"}') == '{"apiKey":"[redacted]","x":"[redacted][redacted]"}'
    assert redact.data(b'{"apiKey":"sk-abc","x":"pw-1pw-1"}') == b'{"apiKey":"[redacted]","x":"[redacted][redacted]"}'


def test_a_secret_containing_another_is_blanked_whole() -> None:
    # Shortest first would leave "sk-[redacted]-long" showing the rest of the longer one.
    for order in (["abc", "sk-abc-long"], ["sk-abc-long", "abc"]):
        assert Redactor(order).text("key=sk-abc-long; other=abc") == f"key={REDACTED}; other={REDACTED}"


@pytest.mark.parametrize("secrets", [[], [""], ["", ""]])
def test_no_secret_changes_nothing(secrets: list[str]) -> None:
    redact = Redactor(secrets)
    assert not redact and redact.longest == 0
    assert redact.text("anything at all") == "anything at all"
    assert redact.data(b"") == b""


def test_every_secret_counts_whatever_its_length() -> None:
    assert Redactor(["x"]).text("a x b") == f"a {REDACTED} b"


def test_longest_is_counted_in_bytes() -> None:
    assert Redactor(["pässwörd", "ab"]).longest == len("pässwörd".encode())
    assert Redactor(["pässwörd"]).data("the pässwörd".encode()) == b"the [redacted]"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 9, 10, 64])
def test_a_stream_is_redacted_across_chunk_boundaries(chunk_size: int) -> None:
    body = b'{"options": {"apiKey": "sk-abcdef"}, "pw": "password-1", "tail": "x"}' * 3
    stream = Redactor(["sk-abcdef", "password-1"]).stream()
    out = b"".join(stream.feed(body[i : i + chunk_size]) for i in range(0, len(body), chunk_size)) + stream.end()
    assert out == body.replace(b"sk-abcdef", b"[redacted]").replace(b"password-1", b"[redacted]")


def test_a_stream_holds_back_only_what_could_begin_a_secret() -> None:
    stream = Redactor(["12345"]).stream()
    assert stream.feed(b"abcdefgh") == b"abcd"  # the last 4 bytes could be the start of the secret
    assert stream.feed(b"") == b""
    assert stream.end() == b"efgh"
    assert stream.end() == b""


def test_a_stream_without_secrets_passes_each_chunk_at_once() -> None:
    stream = Redactor().stream()
    assert stream.feed(b"abc") == b"abc" and stream.end() == b""


# A secret sharing no character with the marker: what is held back has been redacted already, so one
# that could be read across a marker ("ed", "d]x") would be blanked a second time, which the stream
# may do and the whole body would not.
@given(
    secret=st.binary(min_size=1, max_size=12).filter(lambda b: not set(b.decode("latin-1")) & set(REDACTED)),
    pieces=st.lists(st.binary(max_size=20), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_a_stream_redacts_as_the_whole_body_would_be(secret: bytes, pieces: list[bytes], cuts: list[int]) -> None:
    text = secret.decode("latin-1")
    redact = Redactor([text])
    # The stream cuts bytes, so the secret is compared as the bytes it encodes to.
    secret = text.encode()
    body = secret.join(pieces)
    stream = redact.stream()
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    out = b"".join(stream.feed(body[a:b]) for a, b in zip(bounds, bounds[1:])) + stream.end()
    assert out == redact.data(body)
