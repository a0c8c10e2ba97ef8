"""A counting HTTP proxy in front of an OpenAI-compatible server: every POST to ``.../completions`` (chat or
text) is one LLM call, whoever makes it (`cpo loop`, DSPy's optimizers and adapters, the bench's own
evaluation). ``GET /_count`` answers ``{"calls", "errors", "prompt_tokens", "completion_tokens"}`` so far;
everything else is forwarded as is. Counting at the wire is independent of each side's bookkeeping (DSPy's LM
history, caches, retries, adapter fallbacks). A call capped by ``max_completion_tokens`` alone also gets
``max_tokens`` (:func:`token_cap`), the only cap llama-cpp-python's server reads. Used by bench/bench_vs_dspy.py.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def token_cap(data: bytes) -> bytes:
    """A request that caps its tokens with ``max_completion_tokens`` only (the OpenAI field DSPy 3.4 sends) gets
    ``max_tokens`` too: llama-cpp-python's server reads only ``max_tokens`` and would otherwise generate until
    the context ends."""
    try:
        body = json.loads(data)
    except ValueError:
        return data
    if isinstance(body, dict) and body.get("max_completion_tokens") is not None and body.get("max_tokens") is None:
        body["max_tokens"] = body["max_completion_tokens"]
        return json.dumps(body).encode()
    return data


class CountingProxy:
    """``with CountingProxy("http://127.0.0.1:PORT") as url:`` url is ``http://127.0.0.1:P2/v1``."""

    def __init__(self, upstream: str, timeout_s: float = 600.0) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.counts = {"calls": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.server: ThreadingHTTPServer | None = None

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else None
                is_call = method == "POST" and self.path.split("?")[0].endswith("completions")
                if is_call and data:
                    data = token_cap(data)
                req = urllib.request.Request(proxy.upstream + self.path, data=data, method=method,
                                             headers={"Content-Type": self.headers.get("Content-Type",
                                                                                       "application/json")})
                try:
                    with urllib.request.urlopen(req, timeout=proxy.timeout_s) as r:
                        status, body, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as e:
                    status, body, ctype = e.code, e.read(), e.headers.get("Content-Type", "application/json")
                except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                    status, body, ctype = 502, json.dumps({"error": str(e)}).encode(), "application/json"
                if is_call:
                    usage: dict[str, Any] = {}
                    if status == 200:
                        try:
                            usage = json.loads(body).get("usage") or {}
                        except ValueError:
                            pass
                    with proxy.lock:
                        proxy.counts["calls"] += 1
                        proxy.counts["errors"] += status != 200
                        proxy.counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                        proxy.counts["completion_tokens"] += int(usage.get("completion_tokens") or 0)
                self._reply(status, body, ctype)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/_count":
                    self._reply(200, json.dumps(proxy.snapshot()).encode())
                else:
                    self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        return Handler

    def __enter__(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


__all__ = ["CountingProxy"]
