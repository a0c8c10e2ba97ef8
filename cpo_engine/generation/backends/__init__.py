"""LLM backends behind one interface (:class:`~cpo_engine.generation.types.Backend`), as a registry.

Each backend is one file here holding its class and its config dataclass; :data:`BACKENDS` maps the
``backend.kind`` name to both. :class:`BackendConfig` names the kind and the model and holds one
settings section per backend (``backend.openai``, ``backend.vllm``, ``backend.replay``); only the
chosen one is used. The modules import nothing heavy: ``httpx`` and ``vllm`` are imported when a
backend is constructed.

Adding a backend: a file with ``XConfig`` (a dataclass with a ``check()`` run when the backend is
chosen) and ``XBackend(config, model)``, one entry in :data:`BACKENDS` and one field of the same
name on :class:`BackendConfig`.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.backends.openai_http import OpenAIBackend, OpenAIConfig
from cpo_engine.generation.backends.replay import ReplayBackend, ReplayConfig
from cpo_engine.generation.backends.vllm_engine import VLLMBackend, VLLMConfig
from cpo_engine.generation.types import Backend


@dataclass(frozen=True)
class BackendSpec:
    """One registry entry: the backend class, its config dataclass and a one-line description."""

    backend: type
    config: type
    description: str


#: ``backend.kind`` -> implementation; the key is also the name of its section on BackendConfig.
BACKENDS: dict[str, BackendSpec] = {
    "openai": BackendSpec(OpenAIBackend, OpenAIConfig,
                          "any OpenAI-compatible server: vLLM serve, llama.cpp server, hosted APIs"),
    "vllm": BackendSpec(VLLMBackend, VLLMConfig, "offline vllm.LLM engine in this process or in Ray actors"),
    "replay": BackendSpec(ReplayBackend, ReplayConfig, "recorded outcomes from a triplet table"),
}


@dataclass
class BackendConfig:
    """Which LLM backend to run (the ``backend`` section), with one settings section per backend.

    Attributes
    ----------
    kind : str
        A key of :data:`BACKENDS`: ``"openai"`` (default), ``"vllm"`` or ``"replay"``.
    model : str
        Model name or path (vLLM: path or hub id; OpenAI: the ``model`` field sent; replay: label).
    openai : OpenAIConfig
        Endpoint, API-key variable, concurrency, timeout and retries of the OpenAI-compatible backend.
    vllm : VLLMConfig
        Engine arguments of the vLLM backend.
    replay : ReplayConfig
        Log path and answer column of the replay backend.
    """

    kind: str = "openai"
    model: str = "default"
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            close = difflib.get_close_matches(str(self.kind), list(BACKENDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"backend.kind '{self.kind}' is not a backend{hint}; choose one of "
                              f"{', '.join(BACKENDS)}")
        self.options.check()

    @property
    def options(self) -> Any:
        """The settings section of the chosen backend (e.g. ``self.openai`` when kind is openai)."""
        return getattr(self, self.kind)

    def settings(self) -> dict[str, Any]:
        """What a manifest records: kind, model and the chosen backend's settings only (the API key's
        variable name is among them, never its value; credentials in a URL are redacted)."""
        from cpo_engine.utils import redact_url

        options = asdict(self.options)
        if isinstance(options.get("base_url"), str):  # user:key@host must not reach a manifest
            options["base_url"] = redact_url(options["base_url"])
        return {"kind": self.kind, "model": self.model, self.kind: options}


def make_backend(config: BackendConfig, **kwargs: Any) -> Backend:
    """Construct the backend ``config.kind`` names from its settings section.

    Parameters
    ----------
    config : BackendConfig
    **kwargs
        Passed to the backend's constructor (e.g. ``table=`` for the replay backend).
    """
    return BACKENDS[config.kind].backend(config.options, model=config.model, **kwargs)


__all__ = ["BACKENDS", "BackendConfig", "BackendSpec", "OpenAIConfig", "ReplayConfig", "VLLMConfig",
           "make_backend"]
