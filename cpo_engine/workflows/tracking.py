"""MLflow for teams that track runs there (``--mlflow URI``, the ``tracking`` section; the ``mlflow`` extra).

A finished folder of `cpo run`, `cpo optimize`, `cpo verify` or `cpo nightly` becomes one MLflow run in the experiment
``tracking.experiment``:

- parameters: the folder's config (``manifest.json``; a verification's own, ``verify/manifest.json``), flattened to ``section.key``, without the
  ``tracking`` section and without any key that names a secret (``*key*``, ``*token*``, ``*secret*``,
  ``*password*``); environment variables are never read into it;
- metrics: every number of the folder's result file (``summary.json`` of a run, ``best_static_prompt.json`` of
  an optimize folder, ``verify/verification.json`` of a verification, a night's ``report.json``), flattened to dotted names (a list of records by their id),
  and the stage timings and cost totals of the manifest (``time_s.<stage>``, ``cost.<field>``);
- artifacts: the folder's files under ``folder/`` (not its lock or temporary files);
- the prompt the folder puts forward, registered as a version of ``tracking.prompt_name`` in MLflow's prompt
  registry with tags naming the run and its evidence (:func:`prompt_to_register`).

This module only reads folders the workflows have finished; :func:`check_tracking` runs before any work, so a
missing ``mlflow`` package is an error (exit 2) before the data are read, naming the extra to install.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from cpo_engine.exceptions import BackendError, ConfigError
from cpo_engine.settings import TrackingConfig

log = logging.getLogger(__name__)

#: config keys never logged: a name that may hold a secret
SECRET_KEY = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)
#: MLflow's limits per log_batch call
_MAX_PARAMS, _MAX_METRICS, _MAX_TAGS = 100, 1000, 100
_PARAM_VALUE_MAX = 6000


@dataclass
class PromptRecord:
    """A prompt a folder puts forward, with why (the tags of its registry version)."""

    id: str
    text: str
    evidence: str
    why: str
    """'recommended' (a run's static prompt), 'verified' (measured best by an LLM) or 'promoted' (went live)."""
    alias: str | None = None
    """A registry alias moved to this version ('live' for a night's promotion)."""


def check_tracking(cfg: TrackingConfig) -> None:
    """Before any work: with ``mlflow_uri`` set, mlflow must import (else a MissingExtraError naming the extra) and
    ``env`` needs MLFLOW_TRACKING_URI."""
    if cfg.mlflow_uri is None:
        return
    from cpo_engine.utils import require

    require("mlflow", extra="mlflow")
    tracking_uri(cfg)


def tracking_uri(cfg: TrackingConfig) -> str:
    """The URI to log to (``env``: MLFLOW_TRACKING_URI, which stays in the environment, never on disk)."""
    if cfg.mlflow_uri != "env":
        return str(cfg.mlflow_uri)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("--mlflow env reads the tracking URI from MLFLOW_TRACKING_URI, which is not set\n  fix: "
                          "export MLFLOW_TRACKING_URI=... or pass the URI itself: --mlflow sqlite:///mlflow.db")
    return uri


# ------------------------------------------------------------------------------------------ flattening


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of the leaves of nested dicts; a list of records with an ``id`` (or ``prompt_id``) is keyed
    by it, any other list is one leaf."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) and _record_id(r) for r in obj):
        for r in obj:
            yield from flatten({k: v for k, v in r.items() if k not in ("id", "prompt_id")}, f"{prefix}{_record_id(r)}.")
    else:
        yield prefix[:-1], obj


def _record_id(record: dict[str, Any]) -> str | None:
    rid = record.get("id", record.get("prompt_id"))
    return str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def metric_name(path: str) -> str:
    """An MLflow metric or param name: letters, digits, '_', '-', '.', '/' (others become '_')."""
    name = re.sub(r"[^0-9A-Za-z_\-./]+", "_", path)
    return re.sub(r"_*\._*", ".", name).strip("_")[:250]


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """The config as MLflow parameters: no ``tracking`` section, no key that names a secret."""
    out = {}
    for path, value in flatten({k: v for k, v in (config or {}).items() if k != "tracking"}):
        if SECRET_KEY.search(path):
            continue
        out[metric_name(path)] = (value if isinstance(value, str) else json.dumps(value))[:_PARAM_VALUE_MAX]
    return out


def metrics_of(result: dict[str, Any], prefix: str) -> dict[str, float]:
    """Every finite number of a result file (booleans and strings left out), under ``prefix``."""
    out = {}
    for path, value in flatten({k: v for k, v in result.items() if k != "config"}):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[metric_name(f"{prefix}.{path}")] = float(value)
    return out


def manifest_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """The stage timings and the cost ledger's totals of a manifest."""
    out = {metric_name(f"time_s.{k}"): float(v) for k, v in (manifest.get("timings_s") or {}).items()
           if isinstance(v, (int, float))}
    total = (manifest.get("cost") or {}).get("total") or {}
    out.update({metric_name(f"cost.{k}"): float(v) for k, v in total.items() if isinstance(v, (int, float))})
    return out


# ------------------------------------------------------------------------------------------ the folders


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _verified_best(verification: dict[str, Any]) -> PromptRecord | None:
    """The static prompt a verification measured best with a promotable uplift (a per-query policy is no prompt)."""
    best = verification.get("best_promotable")
    if not best or best.get("kind", "static") != "static" or not best.get("text"):
        return None
    u = best.get("uplift_vs_baseline") or {}
    evidence = (f"measured uplift {u.get('value', float('nan')):+.4f} (95% CI {u.get('ci_low', float('nan')):+.4f} "
                f"to {u.get('ci_high', float('nan')):+.4f}) vs the baseline; {u.get('method', 'LLM run')}")
    return PromptRecord(str(best["id"]), str(best["text"]), evidence, "verified")


def prompt_to_register(kind: str, folder: Path, result: dict[str, Any]) -> PromptRecord | None:
    """The prompt a finished folder puts forward, or None.

    - a run (or the folder `cpo verify` measured): the static prompt an LLM verification measured best with a
      promotable uplift when there is one, else (a run) the recommended static prompt (``summary.json``), the
      one every query gets when the per-query policy falls back, with the evidence of its choice;
    - an optimize folder: the same measured best, else the saved model's static choice among the table's
      prompts (``best_static_prompt.json``'s ``pool_static``; a searched, unverified candidate is never
      registered);
    - a night: the prompt that went live tonight (``promotion.status`` promoted or initial, a static live
      record), aliased ``live``; a night that kept the live one, or promoted a per-query policy, registers none.
    """
    if kind == "nightly":
        promotion = result.get("promotion") or {}
        live = promotion.get("live") or {}
        if promotion.get("status") not in ("promoted", "initial") or live.get("kind") != "static":
            return None
        ev = live.get("evidence") or live.get("measured_uplift") or live.get("measured_value")
        evidence = json.dumps(ev, sort_keys=True, default=str)[:_PARAM_VALUE_MAX] if ev is not None else "none"
        return PromptRecord(str(live["id"]), str(live["text"]), evidence, "promoted", alias="live")
    verified = _verified_best(_read(folder / "verify" / "verification.json"))
    if verified is not None or kind == "verify":
        return verified
    if kind == "optimize":
        pool = result.get("pool_static") or {}
        if not pool.get("text"):
            return None
        return PromptRecord(str(pool["prompt_id"]), str(pool["text"]), pool.get("evidence") or "model prediction",
                            "recommended")
    rec = result.get("recommendation") or {}
    if not rec.get("static_prompt_text"):
        return None
    choice = result.get("static_choice") or {}
    evidence = choice.get("sentence") or choice.get("evidence") or "model prediction"
    return PromptRecord(str(rec["static_prompt_id"]), str(rec["static_prompt_text"]), evidence, "recommended")


def _result_file(kind: str, folder: Path) -> tuple[Path, str]:
    return {"run": (folder / "summary.json", "summary"), "verify": (folder / "verify" / "verification.json", "verify"),
            "nightly": (folder / "report.json", "night"),
            "optimize": (folder / "best_static_prompt.json", "optimize")}[kind]


def _files(folder: Path) -> Iterator[Path]:
    """The folder's files, without lock files, temporary files and hidden ones."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") or part.endswith(".tmp") for part in rel.parts):
            yield path


# ------------------------------------------------------------------------------------------ logging


def log_folder(cfg: TrackingConfig, folder: str | Path, kind: str) -> str | None:
    """Log a finished folder (``kind``: 'run', 'optimize', 'verify' or 'nightly') to MLflow; returns the MLflow run id (None
    without ``cfg.mlflow_uri``). An MLflow that cannot be reached is a BackendError saying the folder itself is
    complete."""
    if cfg.mlflow_uri is None:
        return None
    folder = Path(folder)
    uri = tracking_uri(cfg)
    try:
        return _log(cfg, uri, folder, kind)
    except ImportError:
        raise
    except Exception as exc:  # mlflow raises many kinds; the folder is done either way
        raise BackendError(f"the {kind} folder {folder} is complete, but logging it to MLflow at {_safe(uri)} failed: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n  fix: check the "
                           "tracking server or store (and its credentials in MLFLOW_TRACKING_*), then rerun with "
                           "--mlflow; or run without it") from exc


def _safe(uri: str) -> str:
    """A URI as printed: a password (only ever in MLFLOW_TRACKING_URI) masked."""
    return re.sub(r"(//[^/:@]+):[^@/]*@", r"\1:***@", uri)


def _experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created when missing; on a local sqlite store its artifacts go beside the database
    (``mlartifacts/``, as `mlflow server` does) instead of ./mlruns in whatever folder the command ran from."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _log(cfg: TrackingConfig, uri: str, folder: Path, kind: str) -> str:
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    manifest = _read(folder / ("verify/manifest.json" if kind == "verify" else "manifest.json"))  # its own config, cost
    path, prefix = _result_file(kind, folder)
    result = _read(path)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(_experiment(client, cfg.experiment, uri), run_name=f"cpo {kind} {folder.name}",
                            tags={"cpo.kind": kind, "cpo.folder": str(folder.resolve())})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = params_of(manifest.get("config") or result.get("config") or {})
    metrics = metrics_of(result, prefix) | manifest_metrics(manifest)
    if kind in ("run", "optimize"):  # the folder's own verify stage: its measured values and uplifts
        metrics |= metrics_of(_read(folder / "verify" / "verification.json"), "verify")
    tags = {"cpo.status": str(manifest.get("status", "")), "cpo.data_sha256": str((manifest.get("data") or {}).get("sha256", ""))}
    tags |= {metric_name(f"cpo.version.{k}"): str(v) for k, v in (manifest.get("versions") or {}).items()}
    for chunk in _chunks([Param(k, v) for k, v in params.items()], _MAX_PARAMS):
        client.log_batch(run_id, params=chunk, synchronous=True)
    for chunk in _chunks([Metric(k, v, now, 0) for k, v in metrics.items()], _MAX_METRICS):
        client.log_batch(run_id, metrics=chunk, synchronous=True)
    for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], _MAX_TAGS):
        client.log_batch(run_id, tags=chunk, synchronous=True)
    for file in _files(folder):
        rel = file.relative_to(folder).parent
        client.log_artifact(run_id, str(file), "folder" if rel == Path(".") else f"folder/{rel.as_posix()}")
    prompt = prompt_to_register(kind, folder, result)
    if prompt is not None:
        uri_of = _register(client, cfg.prompt_name, prompt, run_id, kind, folder)
        client.set_tag(run_id, "cpo.prompt", uri_of)
    client.set_terminated(run_id, "FINISHED")
    log.info("mlflow: logged %s to %s (experiment '%s', run %s; %d params, %d metrics)%s", folder, _safe(uri),
             cfg.experiment, run_id, len(params), len(metrics),
             f"; prompt '{prompt.id}' in the prompt registry as {cfg.prompt_name}" if prompt else "")
    return run_id


def _register(client: Any, name: str, prompt: PromptRecord, run_id: str, kind: str, folder: Path) -> str:
    """Register ``prompt`` as a new version of ``name`` (the latest version when its text is the same); tags name
    the MLflow run, the folder and the evidence. Returns the version's ``prompts:/name/version`` URI."""
    tags = {"cpo.run_id": run_id, "cpo.kind": kind, "cpo.folder": str(folder.resolve()), "cpo.prompt_id": prompt.id,
            "cpo.why": prompt.why, "cpo.evidence": prompt.evidence[:_PARAM_VALUE_MAX]}
    latest = _latest(client, name)
    if latest is not None and latest.template == prompt.text:
        version = latest.version
        for k, v in tags.items():  # the same text again: the latest version now points at this run
            client.set_prompt_version_tag(name, version, k, v)
    else:
        version = client.register_prompt(name=name, template=prompt.text, tags=tags,
                                         commit_message=f"cpo {kind} {folder.name}: {prompt.why} '{prompt.id}'").version
    if prompt.alias:
        client.set_prompt_alias(name, prompt.alias, int(version))
    return f"prompts:/{name}/{version}"


def _latest(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if client.get_prompt(name) is None:
            return None
        return client.load_prompt(f"prompts:/{name}@latest")
    except MlflowException:
        return None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


__all__ = ["PromptRecord", "check_tracking", "tracking_uri", "log_folder", "prompt_to_register", "flatten",
           "params_of", "metrics_of", "manifest_metrics", "metric_name", "SECRET_KEY"]
