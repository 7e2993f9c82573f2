"""A small HTTP forwarder of ours in front of a gateway that records what passed through it: the
fleet test points its followers' gateway `url` here, so it can say which requests the followers
themselves sent the gateway (model traffic) and which they never sent (the model list)."""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Not forwarded either way: they describe one hop's connection, not the message.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "content-length", "host"}


@dataclass
class RecordingForwarder:
    server: ThreadingHTTPServer
    target: str
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path without the query)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def paths(self) -> list[str]:
        return [path for _, path in list(self.seen)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_forwarder(target: str) -> RecordingForwarder:
    """Forward every request to `target` (`http://host:port`), each answer read whole then sent on."""
    parts = urlsplit(target)
    forwarder: RecordingForwarder

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def _forward(self) -> None:
            forwarder.seen.append((self.command, urlsplit(self.path).path))
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                content = answer.read()
                status, answer_headers = answer.status, answer.getheaders()
            except OSError:
                status, answer_headers, content = 502, [], b'{"error": {"message": "the gateway is down"}}'
            finally:
                connection.close()
            self.send_response(status)
            for name, value in answer_headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    forwarder = RecordingForwarder(server, target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return forwarder
