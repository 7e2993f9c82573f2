"""The load generator and the report: wrk's output parsed, the asyncio generator against a real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.__main__ import groups, markdown_table
from bench.common import Row
from bench.loadgen import parse_wrk, run_python_load

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:4097/v1/models?limit=1000
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.02ms  812.51us  14.20ms   88.12%
    Req/Sec     2.66k   150.77     2.93k    70.00%
  Latency Distribution
     50%    2.87ms
     75%    3.20ms
     90%    3.80ms
     99%  850.00us
  10603 requests in 2.00s, 9.15MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   5298.21
Transfer/sec:      4.57MB
"""


def test_wrk_report_is_parsed_with_its_units() -> None:
    result = parse_wrk(WRK_OUTPUT, connections=16)
    assert (result.tool, result.connections, result.requests) == ("wrk", 16, 10603)
    assert result.rps == 5298.21 and result.seconds == 2.0
    assert result.p50_ms == 2.87 and result.p99_ms == pytest.approx(0.85)
    assert result.errors == 4 + 3


def test_a_wrk_report_without_figures_is_an_error() -> None:
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", connections=1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"data": []}'
        self.send_response(200 if self.path == "/ok" else 500)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_python_generator_counts_answers_and_errors(server: str) -> None:
    ok = run_python_load(f"{server}/ok", connections=2, seconds=0.5, warmup=0.1)
    assert ok.tool == "python-asyncio" and ok.requests > 10 and ok.errors == 0
    assert 0 < ok.p50_ms <= ok.p99_ms
    assert ok.rps == ok.requests / 0.5
    failing = run_python_load(f"{server}/chunked", connections=1, seconds=0.3, warmup=0.0)
    assert failing.requests > 0 and failing.errors == failing.requests  # chunked bodies read, 500s counted


def test_rows_measuring_different_things_get_their_own_tables() -> None:
    rows = [
        Row("scale", "10 models", {"models": 10, "fetch_ms": 1.0, "render_ms": 2.0}),
        Row("scale", "1,000 models", {"models": 1000, "fetch_ms": 3.0, "render_ms": 4.0, "extra": 1}),
        Row("scale", "prompt", {"models": 10, "first_ms": 5.0, "median_ms": 6.0}),
    ]
    assert [len(run) for run in groups(rows)] == [2, 1]
    table = markdown_table(groups(rows)[0])
    assert table.splitlines()[0] == "| case | models | fetch_ms | render_ms | extra |"
    assert "| 1,000 models | 1,000 | 3.00 | 4.00 | 1 |" in table
