"""Proposers: make child prompts from parent prompts, deduplicated, with lineage.

A registry, in the shape of the nuisance registry (:mod:`cpo_engine.causal.nuisances`): every public
module of this package registers one proposer with :func:`register_proposer` (a name, a factory, the
options it takes and a one-line help). The package's modules are imported on the first question to
the registry (:func:`proposer_names`, :func:`proposer_spec`, :func:`make_proposer`), so importing this
module imports no proposer, and a proposer's module keeps its heavy imports inside its factory.

The ``--proposer`` choices and help of the CLI, the validation of
:class:`~cpo_engine.search.config.ProposerConfig` and the workflows' checks (does it need an LLM server?
does it search at all?) all read the registry, so no list of names is written anywhere else.
``proposer_names()`` lists them; each module's docstring describes its own (e.g. :mod:`.edit`: edit
operators weighted by an edit prior, no LLM; :mod:`.llm`: rewrites by an LLM told what the causal model
found strong and weak; :mod:`.none`: no generative search).

To add a proposer: write ``proposers/<name>.py`` whose module calls :func:`register_proposer` on a
factory ``factory(cfg, *, task, seed, **options)`` returning an object with
:meth:`~cpo_engine.search.proposers.base.Proposer.propose`. Nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import Registry, lazy_exports


@dataclass(frozen=True)
class ProposerSpec:
    """A registered proposer.

    Attributes
    ----------
    name : str
        The value of ``proposer.kind`` (and of ``--proposer``) that selects it.
    factory : callable
        ``factory(cfg, *, task, seed, **options)``: a fresh proposer (None: no generative search).
    help : str
        One line (no semicolon), shown in the CLI's help.
    options : mapping of str -> default
        The keys of ``proposer.options`` it takes, with their defaults (any other key is a ConfigError).
    needs_server : bool
        It calls an LLM server (``cpo run``, which starts none, refuses it).
    generative : bool
        It proposes new prompts (False only for ``none``: the logged pool only).
    preflight : callable, optional
        ``preflight(cfg)``: checks run before any data is read (e.g. that a named file exists).
    needs_data : bool
        Its factory also takes ``data=``: the training rows of the triplet table (never the held-out or
        verification queries; the workflows pass them, see :func:`make_proposer`).
    """

    name: str
    factory: Callable[..., Any]
    help: str
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_server: bool = False
    generative: bool = True
    preflight: Callable[[Any], None] | None = None
    needs_data: bool = False

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The options with the given ones over the defaults; ConfigError for a key it does not take or a
        value of another type than its default's."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) or "none"
            raise ConfigError(f"proposer.options: proposer '{self.name}' does not take {', '.join(unknown)} "
                              f"(it takes: {takes})")
        for key, value in given.items():
            default = self.options[key]
            if not _same_kind(value, default):
                raise ConfigError(f"proposer.options.{key} of proposer '{self.name}' must be of type "
                                  f"{type(default).__name__} (default {default!r}), got {value!r}")
        return dict(self.options) | given


def _same_kind(value: Any, default: Any) -> bool:
    """``value`` may replace ``default``: same type (an int where a float is expected; never a bool for a number)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


_REGISTRY = Registry("proposer", __name__, __path__)


def register_proposer(name: str, *, help: str, options: Mapping[str, Any] | None = None,
                      needs_server: bool = False, generative: bool = True,
                      preflight: Callable[[Any], None] | None = None,
                      needs_data: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``factory`` as the proposer ``name`` (see :class:`ProposerSpec`).

    Examples
    --------
    >>> @register_proposer("echo", help="children equal to their parents (a doctest)")
    ... def make_echo(cfg, *, task=None, seed=0):
    ...     return None
    >>> proposer_spec("echo").help
    'children equal to their parents (a doctest)'
    >>> unregister_proposer("echo")
    """
    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.add(name, ProposerSpec(name, factory, help, dict(options or {}), needs_server, generative, preflight,
                                         needs_data), factory)
        return factory

    return decorate


def unregister_proposer(name: str) -> None:
    """Remove ``name`` from the registry (tests and notebooks that registered one of their own)."""
    _REGISTRY.remove(name)


def proposer_names(*, needs_server: bool | None = None, generative: bool | None = None) -> tuple[str, ...]:
    """Registered proposer names, the generative ones first; filtered by ``needs_server``/``generative`` when given."""
    specs = sorted(_REGISTRY.specs(), key=lambda s: not s.generative)  # stable: registration order otherwise
    return tuple(s.name for s in specs if (needs_server is None or s.needs_server == needs_server)
                 and (generative is None or s.generative == generative))


def proposer_spec(name: str, key: str = "proposer.kind") -> ProposerSpec:
    """The registered proposer ``name``; a ConfigError naming ``key``, the closest name and every name otherwise."""
    return _REGISTRY.get(name, key)


def proposer_help(names: tuple[str, ...] | None = None) -> str:
    """``name: help; ...`` for ``names`` (default: every registered proposer), for the CLI's help (argparse
    formats help with ``%``, so a ``%`` is doubled)."""
    return _REGISTRY.help(proposer_names() if names is None else names, lambda s: s.help)


def check_proposer(cfg: Any) -> None:
    """Validate a :class:`~cpo_engine.search.config.ProposerConfig`: a registered kind, options it takes."""
    proposer_spec(cfg.kind).resolve_options(cfg.options)


def preflight_proposer(cfg: Any) -> None:
    """The proposer's own checks before any data is read (e.g. the edit prior file a config names)."""
    spec = proposer_spec(cfg.kind)
    if spec.preflight is not None:
        spec.preflight(cfg)


def make_proposer(cfg: Any, *, task: str | None = None, seed: int = 0, data: Any = None) -> Any:
    """The proposer ``cfg.kind`` names (None for one that is not generative, e.g. ``"none"``).

    Parameters
    ----------
    cfg : ProposerConfig
        Kind, its options, edit prior, task and the LLM server.
    task : str, optional
        Task whose edit-prior weights apply when ``cfg.task`` is unset (callers pass the most common
        task of their table); ``cfg.task`` wins when set.
    seed : int
        Base seed of the proposer.
    data : pyarrow.Table, optional
        The training rows (triplets of the training queries only), for a proposer registered with
        ``needs_data`` (e.g. ``examples``: demonstrations from logged successes); the others ignore it.
    """
    spec = proposer_spec(cfg.kind)
    extra = {"data": data} if spec.needs_data else {}
    return spec.factory(cfg, task=task, seed=seed, **extra, **spec.resolve_options(getattr(cfg, "options", None)))


__getattr__, __dir__, _ = lazy_exports(__name__, {
    "base": ("Feedback", "Proposer"),
    "edit": ("EditProposer", "load_prior"),
    "llm": ("LLMProposer", "meta_prompt", "parse_rewrites"),
})

__all__ = ["EditProposer", "Feedback", "LLMProposer", "Proposer", "ProposerSpec", "check_proposer",
           "load_prior", "make_proposer", "meta_prompt", "parse_rewrites", "preflight_proposer", "proposer_help",
           "proposer_names", "proposer_spec", "register_proposer", "unregister_proposer"]
