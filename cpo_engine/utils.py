"""Small shared helpers: atomic writes, devices, threads, optional imports, hashing, versions, logging and
progress bars, file systems named by URI."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cpo_engine.exceptions import BusyError, ConfigError, MissingExtraError

log = logging.getLogger(__name__)


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
        # mkstemp creates the file 0600 whatever the umask; the finished file gets the mode any
        # plainly created file would (0666 minus the umask), so teammates and web servers can read it.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status; elsewhere set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` through a temp file and rename, with credentials masked (:func:`scrub`)."""
    return atomic_write_bytes(path, scrub(text).encode("utf-8"))


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


EXTRAS = ("vllm", "cuml", "local-llm", "lightgbm", "mlflow", "dev")
"""The optional extras pyproject.toml declares; every other dependency comes with cpo-engine itself."""


def install_hint(extra: str | None) -> str:
    """How to install what an extra (or, for None, cpo-engine's own dependencies) brings."""
    if extra is None:
        return ("it is a dependency of cpo-engine itself: reinstall it with `pip install cpo-engine` "
                "(in a clone: `bash scripts/setup_venv.sh`)")
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; pyproject.toml declares {EXTRAS}")
    return f"install it with `pip install 'cpo-engine[{extra}]'`"


def import_failure(module: str, exc: ImportError, hint: str) -> str:
    """Say honestly why ``module`` did not import: "not installed" (with ``hint``) only when no package of
    that name can be found; otherwise "installed but failed to import", with the underlying error, the
    module's file, and the folder that shadows an installed package when the failing import resolved to a
    file under the current directory (a repository folder named like a PyPI package, say)."""
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"'{module}' is needed here but is not installed; {hint}"
    where = spec.origin if spec.origin not in (None, "namespace") else next(iter(spec.submodule_search_locations or []), "?")
    msg = f"'{module}' is installed ({where}) but failed to import: {type(exc).__name__}: {exc}"
    culprit = _shadowing_file(exc)
    if culprit:
        msg += (f". '{culprit[0]}' resolved to {culprit[1]}, under the current directory {Path.cwd()}, which shadows "
                f"an installed package of that name: run from another directory or rename that folder")
    return msg


def _shadowing_file(exc: ImportError) -> tuple[str, str] | None:
    """(module name, file) of the module the failed import went through that lives under the current directory,
    if any: the failing name itself or one of its parent packages."""
    name = getattr(exc, "name", None) or ""
    parts = name.split(".") if name else []
    candidates = [(name, getattr(exc, "path", None))] + [(".".join(parts[:i]), None) for i in range(len(parts), 0, -1)]
    cwd = Path.cwd().resolve()
    for mod_name, path in candidates:
        mod = sys.modules.get(mod_name)
        path = path or getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", None) or []), None)
        if not path:
            continue
        try:
            if Path(path).resolve().is_relative_to(cwd):
                return mod_name, str(path)
        except OSError:
            continue
    return None


def require(module: str, extra: str | None = None) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError` that says whether it is missing
    (naming the extra to install; ``extra=None`` for cpo-engine's own dependencies) or installed but broken
    (naming the underlying error and file)."""
    hint = install_hint(extra)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(import_failure(module, exc, hint)) from exc


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


def sha256_tree(root: str | os.PathLike[str], pattern: str = "*", skip_suffixes: tuple[str, ...] = ()) -> str:
    """Hash of the files under ``root`` matching ``pattern`` (recursively): each file's path relative
    to ``root`` and its sha256, in sorted order; hidden files and folders are skipped."""
    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(root.rglob(pattern)):
        rel = f.relative_to(root)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts) or f.suffix.lower() in skip_suffixes:
            continue
        h.update(rel.as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


_SECRET_PARAM = re.compile(r"key|token|secret|pass|auth|sig", re.IGNORECASE)


def _has_credentials(url: str) -> bool:
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    return "@" in parts.netloc or any(_SECRET_PARAM.search(k) for k, _ in parse_qsl(parts.query,
                                                                                    keep_blank_values=True))


def redact_url(url: str) -> str:
    """``url`` safe to log or write: ``user:password@`` becomes ``***@`` and the values of query
    parameters that look like credentials (``api_key=``, ``token=``, ...) become ``***``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = "***@" + parts.netloc.rsplit("@", 1)[1] if "@" in parts.netloc else parts.netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a credential (an API key read from its environment variable, a URL's password) so that
    :func:`scrub` masks it wherever it turns up: a server's error body that echoes it, a message, a file."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def register_url_secrets(url: str) -> None:
    """Register the password of ``user:password@`` and the values of credential-like query parameters."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if "@" in parts.netloc:
        register_secret(unquote(parts.netloc.rsplit("@", 1)[0].partition(":")[2]))
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(k):
            register_secret(v)


def scrub(text: str) -> str:
    """``text`` with credentials masked: every URL in it through :func:`redact_url`, and every registered
    secret (:func:`register_secret`) as ``***``. Everything cpo_engine writes to disk as text passes here."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)) if _has_credentials(m.group(0)) else m.group(0),
                                text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


LOCK_FILE = ".cpo.lock"


class FolderLock:
    """An exclusive lock on a folder: ``flock`` on its ``.cpo.lock`` file, held until :meth:`release`.

    The kernel drops an flock when its holder dies (kill -9 included), so a crashed job never leaves a
    stale lock behind. The lock file names its holder (pid, host, command) for the message another
    process gets; it is left in place (removing it would race with the next holder).

    Parameters
    ----------
    folder : path
        The folder to lock (created if missing).
    what : str
        What the folder is, for messages ("run folder", "embedding cache").
    wait : bool
        False: raise :class:`BusyError` at once when another process holds the lock. True: wait for it,
        logging once who holds it.
    fix : str
        What else to do, appended to "fix: wait for it to finish" (e.g. " or pass another --out").
    """

    def __init__(self, folder: str | os.PathLike[str], what: str, *, wait: bool = False, fix: str = "") -> None:
        self.folder, self.what, self.wait, self.fix = Path(folder), what, wait, fix
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            if not self.wait:
                os.close(fd)
                raise BusyError(f"the {self.what} {self.folder} is in use by another cpo process ({holder})\n  "
                                f"fix: wait for it to finish{self.fix}") from None
            log.warning("waiting for another cpo process (%s) that is writing the %s %s", holder, self.what,
                        self.folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                time.gmtime()), "command": scrub(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(folder: str | os.PathLike[str]) -> str | None:
    """Who holds ``folder``'s :class:`FolderLock` now (another process), or None when nobody does.

    For readers: a reader checks that no writer is at work instead of taking the lock, so reading
    never makes a writer wait or fail.
    """
    import fcntl

    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(path)
        return None if holder.startswith(f"pid {os.getpid()} ") else holder  # this process's own lock
    finally:
        os.close(fd)
    return None


def _lock_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def remove_stale_temps(folder: str | os.PathLike[str], pattern: str = ".*.tmp",
                       writer_pid: Any = None) -> int:
    """Delete temp files that :func:`atomic_path` left in ``folder`` when its process was killed.

    Call it only while holding the folder's :class:`FolderLock`: a live writer's temp file would go too. Without
    a lock, ``writer_pid(path) -> int | None`` names each file's writer, and only files of writers that are
    gone are deleted.
    """
    n = 0
    for f in Path(folder).glob(pattern):
        if writer_pid is not None and not _writer_gone(writer_pid(f)):
            continue
        try:
            f.unlink()
            n += 1
        except FileNotFoundError:
            pass
    if n:
        log.info("removed %d temp file(s) left by a killed process in %s", n, folder)
    return n


def _writer_gone(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


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

    ``exports`` maps a submodule name (or a module's full dotted name, for a name another room provides) to
    the names it provides.
    """
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        module = where[name]
        return getattr(importlib.import_module(module if module.startswith("cpo_engine.") else f"{package}.{module}"),
                       name)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names


#: Environment defaults of a cpo process (CLI, Ray Jobs entrypoint, bench script). torch, LightGBM and
#: scikit-learn each bring an OpenMP runtime: spinning waiters of one starve the others on small machines
#: (a 0.7 s LightGBM fit took 10.5 s beside torch). Weights are never fetched from a hub at run time.
PROCESS_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def process_defaults() -> None:
    """Set :data:`PROCESS_DEFAULTS` where the user has not (entry points only, never at import)."""
    for key, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(key, value)


# ----------------------------------------------------------------------------------------------
# console: logging, progress bars

#: Loggers of cpo_engine: INFO by default; everything else (torch, transformers, ray, httpx, ...) only
#: shows WARNING and above unless the level is DEBUG.
LOGGER = "cpo_engine"
_progress = {"enabled": True}


def configure_logging(level: str = "INFO", quiet: bool = False) -> None:
    """One logging setup for the CLI and the Ray Jobs entrypoints.

    cpo_engine's loggers log at ``level``; third-party loggers stay at WARNING (their INFO lines are
    noise to a user) unless ``level`` is DEBUG. ``quiet`` keeps warnings and errors only and turns
    progress bars off.
    """
    import logging
    import sys

    class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to whatever ``sys.stderr`` is at emit time (not the stream of the first call), so a
        process that calls this again after stderr was swapped (tests, notebooks) never logs to a closed one."""

        @property
        def stream(self) -> Any:  # type: ignore[override]
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

        def emit(self, record: logging.LogRecord) -> None:
            # through tqdm.write: a line logged while a bar is drawn clears the bar, prints, and redraws it
            # below (not "...| 0/80 [00:00<?]2026-12-06 INFO ..." on one line)
            try:
                from tqdm import tqdm

                tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # noqa: BLE001 - logging never raises into the caller
                self.handleError(record)

    level = "WARNING" if quiet else level.upper()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[CurrentStderr()],
                        force=True)
    logging.getLogger().setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    for name in (LOGGER, "jobs"):
        logging.getLogger(name).setLevel(level)
    show_progress(not quiet)
    third_party_progress(level == "DEBUG")


def third_party_progress(enabled: bool) -> None:
    """Progress bars of huggingface_hub / transformers (e.g. "Loading weights") only at DEBUG: cpo's own bars
    say what is being done. The variable covers a later import; loaded modules are told directly."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "0" if enabled else "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if enabled else disable_progress_bars)()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()


def show_progress(enabled: bool) -> None:
    """Turn every progress bar of :func:`progress_bar` on or off (``--quiet`` turns them off)."""
    _progress["enabled"] = bool(enabled)


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on stderr with count, rate and ETA (one per long stage); a no-op bar when disabled
    here or by :func:`show_progress`."""
    return _bar_class()(total=total, desc=desc, unit=unit, disable=not (enabled and _progress["enabled"]),
                        dynamic_ncols=True, mininterval=0.5, leave=True)


def _bar_class() -> Any:
    """tqdm whose last update is drawn once, by ``close`` (with the overall rate): tqdm draws the final count
    on the update that reaches it and again on close, two identical lines in a log file."""
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            if not self.disable and self.total is not None and self.n + (n or 0) >= self.total:
                self.n += n or 0  # close() draws it
                return None
            return super().update(n)

    return Bar


class CostLedger:
    """What a run cost, per stage, in this process: LLM calls and tokens (counted where the rows are committed,
    so calls made by Ray workers count too), texts embedded (cache misses) and seconds. A manifest records it
    (``cost``); :meth:`reset` starts a new run."""

    FIELDS = ("llm_calls", "prompt_tokens", "completion_tokens", "embedded_texts", "embedding_seconds", "seconds")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.current = "other"
        self._open: list[tuple[str, float]] = []  # stages in progress: a snapshot counts their time so far

    def _row(self) -> dict[str, float]:
        return self.stages.setdefault(self.current, dict.fromkeys(self.FIELDS, 0))

    def llm(self, calls: int, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        row = self._row()
        row["llm_calls"] += int(calls)
        row["prompt_tokens"] += int(prompt_tokens)
        row["completion_tokens"] += int(completion_tokens)

    def embedded(self, n: int, seconds: float = 0.0) -> None:
        row = self._row()
        row["embedded_texts"] += int(n)
        row["embedding_seconds"] = round(row["embedding_seconds"] + float(seconds), 3)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Costs inside the block count to stage ``name`` (nested: the inner one), and its seconds too."""
        prev, self.current, t0 = self.current, name, time.perf_counter()
        self._open.append((name, t0))
        try:
            yield
        finally:
            self._open.remove((name, t0))
            self._row()["seconds"] = round(self._row()["seconds"] + time.perf_counter() - t0, 3)
            self.current = prev

    def snapshot(self) -> dict[str, Any]:
        stages = {k: dict(v) for k, v in self.stages.items()}
        for name, t0 in self._open:  # a manifest written inside a stage: its seconds so far
            row = stages.setdefault(name, dict.fromkeys(self.FIELDS, 0))
            row["seconds"] = round(row["seconds"] + time.perf_counter() - t0, 3)
        total = {f: round(sum(v[f] for v in stages.values()), 3) if f.endswith("seconds") else
                 int(sum(v[f] for v in stages.values())) for f in self.FIELDS}
        return {"stages": stages, "total": total}


#: The ledger of the run in progress (:class:`CostLedger`).
LEDGER = CostLedger()


def rate_eta(done: int, total: int, elapsed_s: float, unit: str = "rows") -> str:
    """'12.3 rows/s, ETA 4m05s' for log lines where a bar does not fit (e.g. committed shards)."""
    if done <= 0 or elapsed_s <= 0:
        return f"0 {unit}/s"
    rate = done / elapsed_s
    left = max(total - done, 0) / rate
    return f"{rate:.3g} {unit}/s, ETA {format_seconds(left)}"


def format_seconds(s: float) -> str:
    """Seconds as '42s', '4m05s' or '2h03m'."""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# ----------------------------------------------------------------------------------------------
# file systems: local paths, NFS mounts and object stores (s3://, gs://, ...) through pyarrow


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for 'scheme://...' (s3://, gs://, hdfs://, file://); False for plain local paths."""
    return "://" in str(path)


def filesystem(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a local path or any URI pyarrow understands."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    if str(path).startswith(("gs://", "gcs://")) and os.environ.get(GCS_EMULATOR_ENV):
        return _gcs_emulator(str(path), os.environ[GCS_EMULATOR_ENV])
    try:
        return pafs.FileSystem.from_uri(str(path))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot open {path}: {exc} (is pyarrow built with this file system, e.g. S3 or GCS, "
                          "and are its credentials set?)") from exc


#: The variable Google's storage clients read for a GCS API server other than Google's (an emulator such as
#: gcp-storage-emulator or fake-gcs-server): ``http://HOST:PORT``. pyarrow itself reads no endpoint from the
#: environment for ``gs://`` (it does ``AWS_ENDPOINT_URL`` for ``s3://``), so :func:`filesystem` applies it.
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def _gcs_emulator(uri: str, endpoint: str) -> tuple[Any, str]:
    """``gs://bucket/key`` on the GCS API server at ``endpoint`` (``http://host:port``, ``https://...`` or
    ``host:port`` = http), with anonymous requests as Google's clients make to an emulator. Retries stop after
    30 s (pyarrow's default, 15 minutes, makes a stopped emulator look like a hang)."""
    from datetime import timedelta
    from urllib.parse import urlsplit

    import pyarrow.fs as pafs

    scheme, _, hostport = endpoint.rstrip("/").rpartition("://")
    if scheme not in ("", "http", "https") or not hostport or "/" in hostport:
        raise ConfigError(f"{GCS_EMULATOR_ENV}={endpoint!r} is not an endpoint\n  fix: set it to http://HOST:PORT "
                          f"(the GCS API server to use instead of Google's), or unset it")
    parts = urlsplit(uri)
    fs = pafs.GcsFileSystem(anonymous=True, scheme=scheme or "http", endpoint_override=hostport,
                            project_id=os.environ.get("GOOGLE_CLOUD_PROJECT") or None,
                            retry_time_limit=timedelta(seconds=30))
    return fs, (parts.netloc + parts.path).rstrip("/") if parts.path.strip("/") else parts.netloc


def put_bytes(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` of a pyarrow file system so no reader sees half of it: through a temp
    file and a rename on local disks (and NFS), in one upload on object stores (an object becomes
    visible when its stream closes)."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        atomic_write_bytes(path, data)
        return
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def put_parquet(fs: Any, path: str, table: Any) -> None:
    """:func:`put_bytes` of a zstd Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    put_bytes(fs, path, buf.getvalue().to_pybytes())


class Registry:
    """Name -> spec of the plugins of one package, each module of which registers its own (proposers, OPE
    estimators). The package's public modules are imported on the first lookup, so importing the package
    imports no plugin; a name registered twice by two different functions is an error.

    Examples
    --------
    >>> reg = Registry("widget", "cpo_engine.no_such_package", [])
    >>> reg.add("w", {"help": "a widget"}, print)
    >>> reg.get("w")["help"], reg.names()
    ('a widget', ('w',))
    >>> reg.get("x", "widget.kind")
    Traceback (most recent call last):
    ...
    cpo_engine.exceptions.ConfigError: widget.kind: unknown widget 'x'; registered: w
    """

    def __init__(self, kind: str, package: str, path: Any) -> None:
        self.kind, self._package, self._path = kind, package, path
        self._specs: dict[str, Any] = {}
        self._fns: dict[str, Any] = {}
        self._discovered = self._loading = False
        self._lock = threading.RLock()

    def add(self, name: str, spec: Any, fn: Any) -> None:
        old = self._fns.get(name)
        if old is not None and _origin(old) != _origin(fn):
            raise ValueError(f"{self.kind} '{name}' is already registered by {_origin(old)}")
        self._specs[name], self._fns[name] = spec, fn

    def remove(self, name: str) -> None:
        self._specs.pop(name, None)
        self._fns.pop(name, None)

    def specs(self) -> list[Any]:
        """Every registered spec, in registration order."""
        self._discover()
        return list(self._specs.values())

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(self._specs)

    def get(self, name: str, key: str | None = None) -> Any:
        """The spec of ``name``; a ConfigError naming ``key``, the closest name and every name otherwise."""
        import difflib

        self._discover()
        if name not in self._specs:
            close = difflib.get_close_matches(str(name), list(self._specs), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{key or self.kind}: unknown {self.kind} '{name}'{hint}; registered: "
                              f"{', '.join(self._specs)}")
        return self._specs[name]

    def help(self, names: Any, text: Any) -> str:
        """``name: text(spec); ...`` for the CLI's help (argparse formats help with ``%``: it is doubled)."""
        return "; ".join(f"{n}: {text(self.get(n))}" for n in names).replace("%", "%%")

    def _discover(self) -> None:
        """Import the package's modules once. Another thread asking meanwhile waits for the whole list (it used
        to see an empty registry: the first lookups of two threads at once); a lookup made by a module while it
        is being imported (the same thread) sees the part registered so far."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered or self._loading:
                return
            self._loading = True
            try:
                import pkgutil

                for info in pkgutil.iter_modules(self._path):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{self._package}.{info.name}")
                self._discovered = True
            finally:
                self._loading = False


def _origin(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
