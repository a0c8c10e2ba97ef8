"""Small shared helpers: atomic writes, devices, threads, optional imports, hashing, versions."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cpo_engine.exceptions import ConfigError, MissingExtraError


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds.

    Readers never see a half-written file: the rename is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def atomic_write_parquet(table: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a pyarrow Table to Parquet (zstd) through a temp file and rename."""
    import pyarrow.parquet as pq

    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(path)


def json_default(obj: Any) -> Any:
    """`json.dumps` default: NumPy scalars and arrays, paths; anything else is a TypeError."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def json_default_str(obj: Any) -> Any:
    """Like :func:`json_default`, but writes anything else as its `str` (for provenance records)."""
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA device is visible, else 'cpu'. Validates explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was requested but no CUDA device is visible; use --device cpu or auto")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got '{device}'")
    return device


def set_threads(n: int | None) -> None:
    """Set torch's intra-op thread count (None leaves the default)."""
    if n is None:
        return
    if n < 1:
        raise ConfigError(f"num_threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or raise an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"'{module}' is needed here but is not installed ({exc}); install it with "
            f"`pip install 'cpo-engine[{extra}]'`"
        ) from exc


def to_cupy(array: Any) -> Any:
    """A CuPy view of a CUDA torch tensor (or a CuPy array as is) through DLPack: no copy, no host trip.

    The hand-off from torch to cuML (the ``cuml`` extra brings CuPy). A CPU array is moved to the GPU
    (one host-to-device copy)."""
    cp = require("cupy", extra="cuml")
    if isinstance(array, cp.ndarray):
        return array
    if type(array).__module__.startswith("torch") and array.is_cuda:
        return cp.from_dlpack(array.detach().contiguous())
    return cp.asarray(array)


def to_torch(array: Any, device: str | None = None) -> Any:
    """A torch tensor sharing memory with ``array``: CuPy (and any DLPack producer on the GPU) through
    DLPack with no copy, NumPy through ``torch.from_numpy``; the hand-off from cuML back to torch."""
    import numpy as np
    import torch

    if isinstance(array, torch.Tensor):
        out = array
    elif hasattr(array, "__dlpack__") and not isinstance(array, np.ndarray):
        out = torch.from_dlpack(array)
    else:
        out = torch.from_numpy(np.ascontiguousarray(array))
    return out if device is None else out.to(device)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str | None]:
    """Versions of the packages that decide results, for manifests and benchmark JSON."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("cpo-engine", "torch", "numpy", "pyarrow", "scikit-learn", "econml", "ray",
                "sentence-transformers", "vllm", "cuml", "cupy", "triton"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["commit"] = git_commit()
    return out


def device_info() -> dict[str, Any]:
    """Which hardware a result was measured on."""
    import torch

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.is_available(),
                            "loadavg_1m": os.getloadavg()[0]}  # a busy machine skews timings: record it
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Any, Any, list[str]]:
    """PEP 562 ``__getattr__``/``__dir__``/``__all__`` for a room's ``__init__``: names are imported from
    their module on first use, so importing a light module of the room (its config) never pulls torch.

    ``exports`` maps a submodule name to the names it provides.
    """
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names


#: Environment defaults of a cpo process (CLI, Ray Jobs entrypoint, bench script). torch, LightGBM and
#: scikit-learn each bring an OpenMP runtime: spinning waiters of one starve the others on small machines
#: (a 0.7 s LightGBM fit took 10.5 s beside torch). Weights are never fetched from a hub at run time.
PROCESS_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false"}


def process_defaults() -> None:
    """Set :data:`PROCESS_DEFAULTS` where the user has not (entry points only, never at import)."""
    for key, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(key, value)
