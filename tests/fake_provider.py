"""A real HTTP server on 127.0.0.1 that answers like a hosted model provider, and records requests.

Tests queue the replies (status, JSON body, headers, or a hang) and afterwards read
what the official SDK sent: path, headers, JSON or multipart body, arrival time.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    hang: bool = False  # never answer (until the server stops)


def json_reply(status: int, payload: Any, **headers: str) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(payload).encode(), dict(headers))


@dataclass
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, list[tuple[str | None, str, bytes]]]:
        """A multipart/form-data body: name → [(filename, content type, bytes)]."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        fields: dict[str, list[tuple[str | None, str, bytes]]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            assert isinstance(name, str) and isinstance(payload, bytes)
            fields.setdefault(name, []).append(
                (part.get_filename(), part.get_content_type(), payload)
            )
        return fields

    def field(self, name: str) -> str:
        """One text field of a multipart body."""
        return self.form()[name][0][2].decode()


class FakeProvider:
    """Serves queued replies in order; when the queue is empty, ``default`` answers."""

    def __init__(self, default: Callable[[Received], Reply] | None = None) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self.default = default or (lambda _: json_reply(500, {"error": "no reply queued"}))
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.monotonic(),
                )
                with fake._lock:
                    fake.received.append(request)
                    reply = fake.replies.pop(0) if fake.replies else fake.default(request)
                if reply.hang:
                    fake._release.wait()
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            do_POST = _handle  # noqa: N815
            do_GET = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self.replies.extend(replies)

    def start(self) -> FakeProvider:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hung requests and stop."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
