"""A test double of an OpenAI-compatible server: answers every chat/completion request with the number
the question asks for (so the numeric grader scores it), after ``delay_s``, or with ``fail_status`` for
the first ``fail_first`` requests. Counts the requests it served. No real server fails on demand."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.requests += 1
            fail = srv.requests <= srv.fail_first
        time.sleep(srv.delay_s)
        if fail:
            self._send(srv.fail_status, {"error": {"message": f"status {srv.fail_status}"}})
            return
        text = json.dumps(body.get("messages") or body.get("prompt"))
        numbers = re.findall(r"\d+", text)
        answer = f"The answer is {int(numbers[0]) + 10 if numbers else 0}."
        choice = {"message": {"role": "assistant", "content": answer}} if "messages" in body else {"text": answer}
        self._send(200, {"choices": [choice | {"finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 4}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-request (fault tests)
            pass


def serve(delay_s: float = 0.0, fail_first: int = 0, fail_status: int = 400) -> Iterator[ThreadingHTTPServer]:
    """Run the server on a free port for the duration of a fixture; ``srv.url`` is its /v1 root."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.lock, srv.requests = threading.Lock(), 0
    srv.delay_s, srv.fail_first, srv.fail_status = delay_s, fail_first, fail_status
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
