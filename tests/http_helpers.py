"""Shared by the tests' local HTTP servers (real servers on 127.0.0.1 that answer like an LLM API, or fail
on purpose): one reply with a body."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def reply(handler: BaseHTTPRequestHandler, body: bytes, content_type: str = "application/json",
          status: int = 200) -> None:
    """Send ``body`` with its status, content type and length."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
