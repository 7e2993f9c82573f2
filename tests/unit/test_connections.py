"""The connection policy as pure decisions: which connection to admit, evict or close, and when."""

import pytest

from sidecar.http.connections import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    ConnectionLimits,
    ConnectionTable,
    connections_that_fit,
    open_files_needed,
)

LIMITS = ConnectionLimits(max_connections=3, header_timeout=10.0, body_timeout=30.0)


def test_admits_up_to_the_bound_then_evicts_the_longest_waiting() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    for t, conn in enumerate(["a", "b", "c"]):
        admission = table.admit(conn, float(t))
        assert admission.admitted and admission.evict is None
    admission = table.admit("d", 3.0)
    assert admission.admitted and admission.evict == "a"
    assert len(table) == 3


def test_busy_connections_are_never_evicted() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    for conn in ["a", "b", "c"]:
        table.admit(conn, 0.0)
        table.busy(conn)
    refused = table.admit("d", 3.0)
    assert not refused.admitted and len(table) == 3


def test_a_stalled_body_is_evicted_when_it_has_waited_longest() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    for conn in ["a", "b", "c"]:
        table.admit(conn, 0.0)
    table.busy("a")
    table.body("b", 1.0)
    table.waiting("c", 0.0)
    table.body("c", 2.0)  # a body that came later
    assert table.admit("d", 3.0).evict == "b"
    assert table.admit("e", 4.0).evict == "c"
    table.body("d", 5.0)  # progress: now fresher than e, which has waited since 4.0
    assert table.admit("f", 6.0).evict == "e"


def test_a_connection_back_between_requests_waits_at_the_end_of_the_line() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", 0.0)
    table.admit("b", 1.0)
    table.admit("c", 2.0)
    table.busy("a")
    table.waiting("a", 5.0)  # answered; now idle
    assert table.admit("d", 6.0).evict == "b"


def test_headers_have_a_deadline_that_bytes_do_not_extend() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("slow", 0.0)
    for t in range(1, 10):
        table.waiting("slow", float(t))  # a byte now and then, still inside the headers
    assert table.overdue(9.9) == []
    assert table.overdue(10.0) == [("slow", HEADER_TIMEOUT)]


def test_body_deadline_is_idle_time_and_progress_renews_it() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("upload", 0.0)
    table.body("upload", 1.0)
    table.body("upload", 25.0)
    assert table.overdue(54.9) == []
    table.body("upload", 50.0, progress=False)  # the server's own wait is not progress
    assert table.overdue(55.0) == [("upload", BODY_TIMEOUT)]


def test_busy_connections_have_no_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("stream", 0.0)
    table.busy("stream")
    assert table.overdue(1e9) == []


def test_overdue_names_only_the_late_in_order() -> None:
    table: ConnectionTable[str] = ConnectionTable(ConnectionLimits(100, 10.0, 30.0))
    for t in range(20):
        table.admit(f"c{t}", float(t))
    assert [conn for conn, _ in table.overdue(14.5)] == ["c0", "c1", "c2", "c3", "c4"]


def test_a_forgotten_connection_is_not_brought_back() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", 0.0)
    table.admit("b", 0.0)
    table.admit("c", 0.0)
    evicted = table.admit("d", 1.0).evict
    assert evicted == "a"
    table.waiting("a", 2.0)
    table.body("a", 2.0)
    table.busy("a")
    assert len(table) == 3
    table.forget("b")
    table.forget("b")
    assert len(table) == 2


@pytest.mark.parametrize("max_connections", [1, 200, 1000])
def test_the_bound_fits_the_files_it_needs(max_connections: int) -> None:
    needed = open_files_needed(max_connections)
    assert connections_that_fit(needed) == max_connections
    assert connections_that_fit(needed - 1) == max_connections - 1
    assert connections_that_fit(10) == 0


def test_the_next_deadline_is_the_oldest_of_each_phase_by_its_timeout() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    assert table.next_deadline() is None  # nothing open: nothing falls due
    table.admit("a", 5.0)
    table.admit("b", 7.0)
    assert table.next_deadline() == 15.0  # a's headers, 10 s after it opened
    table.body("a", 8.0)
    assert table.next_deadline() == 17.0  # b's headers now; a's body is due at 38
    table.busy("b")
    assert table.next_deadline() == 38.0
    table.forget("a")
    assert table.next_deadline() is None  # the application at work for b: no deadline of the client's
