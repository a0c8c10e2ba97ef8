"""Where tables and run folders live: a local path (or an NFS mount), or an object-store URI (``s3://``,
``gs://``, ``hdfs://``) reached through ``pyarrow.fs`` (:func:`location`, the one entry point every reader
and writer of a URI goes through).

Credentials and endpoints come from the environment only, as the AWS and Google SDKs read them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for an S3-compatible server such as MinIO; ``GOOGLE_APPLICATION_CREDENTIALS`` for
``gs://``, ``STORAGE_EMULATOR_HOST`` for a GCS API emulator, reached with anonymous requests). A URI that carries credentials (``s3://KEY:SECRET@bucket/...``, ``?secret_key=...``) is refused,
so no secret reaches a config, a manifest or a log.

Run folders are written locally and then uploaded (:func:`upload_folder`): the folder's files first, its
``manifest.json`` last, so a reader that finds a manifest finds every output it lists.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.utils import _has_credentials, filesystem, is_uri

#: Where the credentials of each store come from (named in errors).
CREDENTIALS_HINT = ("credentials and endpoint come from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                    "(AWS_ENDPOINT_URL for MinIO or another S3-compatible server) for s3://, "
                    "GOOGLE_APPLICATION_CREDENTIALS (STORAGE_EMULATOR_HOST for a GCS emulator) for gs://")


def is_remote(path: Any) -> bool:
    """True for an object-store or other file-system URI (``s3://``, ``gs://``, ``hdfs://``); False for a local
    path and for ``file://`` (read as the local path it names)."""
    return isinstance(path, (str, os.PathLike)) and is_uri(path) and not str(path).startswith("file://")


def location(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` of a local path or a URI. A URI with credentials in it is a
    :class:`ConfigError` (they belong in the environment, never in a path a manifest records)."""
    if is_remote(path) and _has_credentials(str(path)):
        raise ConfigError(f"{_scheme(path)} URI with credentials in it (a user:password@ part or a key/secret/"
                          f"token parameter): cpo never takes credentials from a path, which configs and manifests "
                          f"record\n  fix: remove them from the URI; {CREDENTIALS_HINT}")
    return filesystem(path)


def _scheme(path: Any) -> str:
    return str(path).split("://", 1)[0] + "://"


def path_type(path: str | os.PathLike[str]) -> str | None:
    """'file', 'dir', or None when nothing is there (a local path or a URI)."""
    import pyarrow.fs as pafs

    if not is_remote(path):
        p = Path(str(path)[len("file://"):] if str(path).startswith("file://") else path)
        return "dir" if p.is_dir() else "file" if p.exists() else None
    fs, inner = location(path)
    try:
        kind = fs.get_file_info(inner).type
    except OSError as exc:
        raise DataError(f"cannot reach it ({str(exc).splitlines()[0]})", source=str(path),
                        fix=f"check the URI and the network; {CREDENTIALS_HINT}") from exc
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(kind)


def list_files(path: str | os.PathLike[str], suffixes: tuple[str, ...] = ()) -> list[str]:
    """The files under a remote folder (paths inside its file system, sorted), hidden ones (a part starting
    with '.' or '_') skipped, only those ending in ``suffixes`` when given."""
    import pyarrow.fs as pafs

    fs, inner = location(path)
    root = inner.rstrip("/")
    out = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        rel = info.path[len(root):].lstrip("/")
        if info.type != pafs.FileType.File or any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        if not suffixes or info.path.lower().endswith(suffixes):
            out.append(info.path)
    return sorted(out)


def open_input(path: str | os.PathLike[str]) -> Any:
    """A readable binary file of a local path or a URI (random access: Parquet reads its footer)."""
    if not is_remote(path):
        return open(path, "rb")
    fs, inner = location(path)
    return fs.open_input_file(inner)


def sha256_path(path: str | os.PathLike[str], pattern_suffixes: tuple[str, ...] = (".parquet",)) -> str:
    """sha256 of a file, or of a folder's files ending in ``pattern_suffixes`` (each one's relative path and
    sha256, in sorted order, as :func:`cpo_engine.utils.sha256_tree`), local or remote."""
    from cpo_engine.utils import sha256_file, sha256_tree

    if not is_remote(path):
        return sha256_file(path) if Path(path).is_file() else sha256_tree(path, "*.parquet")
    fs, inner = location(path)
    if path_type(path) == "file":
        return _stream_sha256(fs, inner)
    root = inner.rstrip("/")
    h = hashlib.sha256()
    for f in list_files(path, pattern_suffixes):
        h.update(f[len(root):].lstrip("/").encode())
        h.update(_stream_sha256(fs, f).encode())
    return h.hexdigest()


def _stream_sha256(fs: Any, inner: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(inner) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def staging_folder(uri: str) -> Path:
    """The local folder a run bound for ``uri`` is written in before :func:`upload_folder` (one per URI, so a
    rerun to the same URI reuses it as a local rerun reuses its folder): ``$CPO_STAGING_DIR`` or
    ``.cpo_cache/staging``, then the URI's scheme, bucket and key."""
    base = Path(os.environ.get("CPO_STAGING_DIR") or ".cpo_cache/staging")
    scheme, rest = str(uri).split("://", 1)
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    return base / scheme / Path(*parts) if parts else base / scheme


SKIP_UPLOAD = (".cpo.lock", ".cpo-previous")


def upload_folder(local: str | os.PathLike[str], uri: str, last: str = "manifest.json") -> list[str]:
    """Copy a finished local run folder to ``uri``: the old ``last`` file (the manifest) is removed first, then
    every file is uploaded (each object appears whole when its upload ends), files an earlier run left at the
    URI that this run did not write are deleted, and ``last`` is uploaded at the end: the manifest is the
    commit mark of the folder (object stores have no atomic multi-object rename). Returns the uploaded paths
    (inside the store)."""
    import pyarrow.fs as pafs

    fs, inner = location(uri)
    root, local = inner.rstrip("/"), Path(local)
    files = sorted(f for f in local.rglob("*") if f.is_file()
                   and not any(part in SKIP_UPLOAD or part.endswith(".tmp") for part in f.relative_to(local).parts))
    rels = [f.relative_to(local).as_posix() for f in files]
    try:
        if fs.get_file_info(f"{root}/{last}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{last}")
        fs.create_dir(root, recursive=True)
        for f, rel in sorted(zip(files, rels), key=lambda fr: fr[1] == last):  # the manifest last
            if rel == last:
                _drop_stale(fs, root, set(rels))
            _upload(fs, f, f"{root}/{rel}")
    except OSError as exc:
        raise DataError(f"cannot write the run folder there ({str(exc).splitlines()[0]}); the complete run is in "
                        f"{local}", source=uri, fix=f"check the bucket and its write permission; {CREDENTIALS_HINT}"
                        ) from exc
    if last not in rels:
        _drop_stale(fs, root, set(rels))
    return [f"{root}/{rel}" for rel in rels]


def download(fs: Any, src: str, dst: str | os.PathLike[str], folder: bool = True) -> Path:
    """Copy the file or folder ``src`` of the store ``fs`` (:func:`location`) to the local path ``dst``, making the
    local folders it needs first (pyarrow's copy_files fills a folder but does not make it: found against a real
    S3)."""
    import pyarrow.fs as pafs

    dst = Path(dst)
    (dst if folder else dst.parent).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(src, str(dst), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return dst


def _upload(fs: Any, src: Path, dst: str) -> None:
    parent = dst.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with open(src, "rb") as fin, fs.open_output_stream(dst) as fout:
        while block := fin.read(1 << 22):
            fout.write(block)


def _drop_stale(fs: Any, root: str, keep: set[str]) -> None:
    import pyarrow.fs as pafs

    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        rel = info.path[len(root):].lstrip("/")
        if info.type == pafs.FileType.File and rel not in keep:
            fs.delete_file(info.path)


__all__ = ["is_remote", "location", "path_type", "list_files", "open_input", "sha256_path", "staging_folder", "download",
           "upload_folder", "CREDENTIALS_HINT"]
