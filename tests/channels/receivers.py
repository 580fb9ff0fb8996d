"""Real receivers for the channel tests: an SMTP server (aiosmtpd) and an HTTP
server (http.server), each on a free port in a thread of its own."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import free_port


@dataclass
class SmtpInbox:
    """Accepts every message, unless ``reply`` says otherwise (``"554 …"``)."""

    messages: list[EmailMessage] = field(default_factory=list)
    peers: list[object] = field(default_factory=list)
    """The client address of each message: one per connection."""
    reply: str = "250 OK"
    delay_s: float = 0.0
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay_s:
            import asyncio

            await asyncio.sleep(self.delay_s)
        self.peers.append(session.peer)
        if self.reply.startswith("250"):
            content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
            parsed = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.messages.append(parsed)
        return self.reply


@contextmanager
def smtp_server() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class HttpReceiver:
    """Answers each path with the next of its scripted ``(status, delay_s,
    headers)`` (the last one repeats; 200 without a script) and records requests."""

    port: int = 0
    script: dict[str, list[tuple[int, float, dict[str, str]]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str) -> tuple[int, float, dict[str, str]]:
        with self.lock:
            steps = self.script.get(path)
            if not steps:
                return 200, 0.0, {}
            return steps.pop(0) if len(steps) > 1 else steps[0]

    def to(self, path: str) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if request.path == path]


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.requests.append(Request(self.path, dict(self.headers.items()), body, time.monotonic()))
            status, delay_s, headers = receiver.answer(self.path)
            if delay_s:
                time.sleep(delay_s)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
