"""OpenAI-compatible HTTP backend: vLLM serve, llama.cpp server, hosted APIs.

Async (httpx) with at most ``max_concurrency`` requests in flight; 429, 5xx, timeouts and dropped
connections are retried with exponential backoff and jitter (a ``Retry-After`` header wins);
4xx other than 429 fail the row at once. The API key is read from the environment variable named
by ``api_key_env`` when the backend starts: it is sent only in the Authorization header, never
stored in a config, logged, put in an error message or written to a manifest. Credentials written
into the URL (``https://user:key@host/v1``) are sent by the HTTP client and redacted everywhere the
URL is shown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.types import GenerationRequest, GenerationResponse
from cpo_engine.utils import redact_url, register_secret, register_url_secrets, require, scrub

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 30.0


@dataclass
class OpenAIConfig:
    """Settings of the OpenAI-compatible backend (the ``backend.openai`` section).

    Attributes
    ----------
    base_url : str
        Endpoint root, e.g. ``http://127.0.0.1:8000/v1``.
    api_key_env : str
        Name of the environment variable that holds the API key. The key itself is never stored in
        a config, logged or written to a manifest; an unset variable sends no Authorization header.
    max_concurrency : int
        Requests in flight at once.
    timeout_s : float
        Per-request timeout in seconds.
    max_retries : int
        Retries after a 429, a 5xx, a timeout or a connection error, with exponential backoff.
    backoff_s : float
        First backoff delay in seconds; doubles per retry (with jitter), capped at 30 s; a
        ``Retry-After`` header takes precedence.
    base_urls : list of str
        Further endpoints serving the same model (e.g. one llama.cpp server per CPU core): requests are
        spread over ``base_url`` and these in turn, ``max_concurrency`` in flight over all of them.
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    base_urls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigError(f"backend.openai.max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.timeout_s <= 0:
            raise ConfigError(f"backend.openai.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0 or self.backoff_s < 0:
            raise ConfigError(f"backend.openai.max_retries and backoff_s must be >= 0, got {self.max_retries} "
                              f"and {self.backoff_s}")

    def check(self) -> None:
        """Checks that apply only when this backend is the one chosen (none here)."""


class OpenAIBackend:
    """Batch client for an OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions`` API.

    Parameters
    ----------
    config : OpenAIConfig
        Endpoint, API-key variable, concurrency, timeout and retries.
    model : str
        The ``model`` field sent with every request.
    """

    name = "openai"

    def __init__(self, config: OpenAIConfig, model: str = "default") -> None:
        require("httpx")
        self.config = config
        self.model = model
        self.base_url = config.base_url.rstrip("/")
        self._api_key = os.environ.get(config.api_key_env) or None
        self._root, self._query, self._basic = _split_base_url(self.base_url)
        # (root, query) of every endpoint, base_url first; a request goes to the one with the fewest in flight
        self._endpoints = [(self._root, self._query)] + [_split_base_url(u.rstrip("/"))[:2] for u in config.base_urls]
        self._in_flight = [0] * len(self._endpoints)
        for secret in (self._api_key, *(self._basic or ())):
            register_secret(secret)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(base_url={redact_url(self.base_url)!r}, model={self.model!r})"

    def close(self) -> None:
        return None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        """Answer all requests (blocking); order is preserved. Works inside a running event loop too
        (e.g. a notebook): the batch then runs on a helper thread with its own loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.agenerate(requests)).result()

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        """Answer all requests concurrently, at most ``max_concurrency`` at a time."""
        import httpx

        sem = asyncio.Semaphore(self.config.max_concurrency)
        # a key from the environment wins: Bearer, never also Basic from the URL (httpx would send Basic from
        # user:pass@ in the URL and drop the Bearer header); without one, user:pass@ is sent as Basic auth
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        auth = httpx.BasicAuth(*self._basic) if self._basic and not self._api_key else None
        limits = httpx.Limits(max_connections=self.config.max_concurrency)
        async with httpx.AsyncClient(headers=headers, auth=auth, timeout=self.config.timeout_s,
                                     limits=limits) as client:
            return list(await asyncio.gather(*(self._one(client, sem, r) for r in requests)))

    def _payload(self, req: GenerationRequest, at: int = 0) -> tuple[str, dict[str, Any]]:
        s = req.sampling
        body: dict[str, Any] = {"model": self.model, "temperature": s.temperature, "top_p": s.top_p,
                                "max_tokens": s.max_tokens, **s.extra}
        if s.stop:
            body["stop"] = list(s.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        if req.messages is not None:
            body["messages"] = list(req.messages)
            return self._endpoint("chat/completions", at), body
        body["prompt"] = req.text
        return self._endpoint("completions", at), body

    def _endpoint(self, path: str, at: int = 0) -> str:
        """Endpoint ``at`` (0: ``base_url``) + ``/path``, the path before any query string (``?api_key=...``
        stays a query)."""
        root, query = self._endpoints[at % len(self._endpoints)]
        return f"{root}/{path}" + (f"?{query}" if query else "")

    async def _one(self, client: Any, sem: asyncio.Semaphore, req: GenerationRequest) -> GenerationResponse:
        async with sem:
            at = min(range(len(self._endpoints)), key=self._in_flight.__getitem__)  # the least busy endpoint
            url, body = self._payload(req, at)
            self._in_flight[at] += 1
            t0 = time.perf_counter()
            try:
                data, error = await self._post_with_retries(client, url, body)
            finally:
                self._in_flight[at] -= 1
            latency = time.perf_counter() - t0
        if error is not None:  # a server may echo the key or the URL in its error body
            return GenerationResponse(key=req.key, text=None, latency_s=latency, error=scrub(error))
        return _parse(req, data, latency)

    async def _post_with_retries(self, client: Any, url: str, body: dict[str, Any]) -> tuple[Any, str | None]:
        import httpx

        error = "no attempt made"
        for attempt in range(self.config.max_retries + 1):
            retry_after: float | None = None
            try:
                resp = await client.post(url, json=body)
            except httpx.TimeoutException:
                error = f"timeout after {self.config.timeout_s:g} s"
            except httpx.TransportError as exc:
                error = f"connection error: {type(exc).__name__}: {exc}".replace(self.base_url,
                                                                                  redact_url(self.base_url))
            else:
                if resp.status_code < 400:
                    try:
                        return resp.json(), None
                    except ValueError:  # a proxy's login page, an HTML error page: this row failed, the run goes on
                        return None, (f"HTTP {resp.status_code} with a body that is not JSON (a proxy or login page "
                                      f"in front of the server?): {resp.text[:120]!r}")
                error = f"HTTP {resp.status_code}: {_error_text(resp)}"
                if resp.status_code not in _RETRY_STATUS:
                    return None, error
                retry_after = _retry_after(resp.headers.get("retry-after"))
            if attempt < self.config.max_retries:
                await asyncio.sleep(self._backoff(attempt, retry_after))
        return None, f"{error} (gave up after {self.config.max_retries + 1} attempts)"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_BACKOFF_S)
        base = self.config.backoff_s * (2**attempt)
        return min(base * (0.5 + random.random()), _MAX_BACKOFF_S)


def _split_base_url(url: str) -> tuple[str, str, tuple[str, str] | None]:
    """(scheme://host/path without credentials, query string, (user, password) or None)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    basic = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        basic = (unquote(user), unquote(password))
    register_url_secrets(url)  # api_key=..., token=... values are masked wherever a server echoes them
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/"), parts.query, basic


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _error_text(resp: Any) -> str:
    """The server's error message, truncated; request headers (with the key) are never included."""
    try:
        data = resp.json()
        msg = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return str(msg)[:300]
    except ValueError:
        return resp.text[:300]


def _parse(req: GenerationRequest, data: Any, latency: float) -> GenerationResponse:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if req.messages is not None else choice["text"]
        usage = data.get("usage") or {}
    except (KeyError, IndexError, TypeError) as exc:
        return GenerationResponse(key=req.key, text=None, latency_s=latency,
                                  error=f"malformed response ({type(exc).__name__}: {exc})")
    return GenerationResponse(
        key=req.key, text=text or "", latency_s=latency, finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
    )


__all__ = ["OpenAIBackend", "OpenAIConfig"]
