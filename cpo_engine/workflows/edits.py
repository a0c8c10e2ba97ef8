"""`cpo edits`: a triplet table or an optimizer trajectory -> which prompt edits help on which task (edit-family x
task effects, surface and motif effects, heterogeneity across tasks, a heatmap) and an edit prior, written to a
folder whose manifest says kind 'edits'. The analysis is :func:`cpo_engine.edits.analyze`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpo_engine.exceptions import ConfigError
from cpo_engine.settings import EditsJobConfig
from cpo_engine.workflows.common import MANIFEST, now, read_kind, usable_folder, write_manifest

if TYPE_CHECKING:
    from cpo_engine.edits.analysis import EditReport


@dataclass
class EditsResult:
    """What `cpo edits` did: the report (its tables), the edit prior and the files written to ``out``."""

    out: Path
    report: EditReport
    prior: dict[str, Any]
    paths: dict[str, Path]


def analyze_edits_job(cfg: EditsJobConfig) -> EditsResult:
    """Check the output folder (before any work), then, holding its lock, analyse ``cfg.data``
    (:func:`cpo_engine.edits.analyze`) and write the report, the edit prior and the manifest (kind 'edits')."""
    from cpo_engine.edits import analyze, write_report
    from cpo_engine.utils import FolderLock

    if not cfg.data:
        raise ConfigError("no input: pass --data PATH (a triplet table or an optimizer trajectory)")
    if not cfg.out:
        raise ConfigError("cpo edits needs an output folder: pass --out DIR")
    from cpo_engine.data.storage import is_remote

    if is_remote(cfg.out):  # written in a local staging folder, uploaded when it ends (manifest last)
        from cpo_engine.workflows.common import staged

        return staged(cfg, analyze_edits_job)
    out = _edits_folder(cfg.out)  # a wrong --out is refused in seconds, not after the analysis
    started = now()
    with FolderLock(out, "edit analysis folder", fix=" or pass another --out"):
        report, prior = analyze(cfg.data, cfg.kind, cfg.pairs, cfg.effects, cfg.prior, cfg.filters(), cfg.score_column)
        prior["meta"]["source"] = str(cfg.data)
        paths = write_report(report, prior, out, source=str(cfg.data))
        write_manifest(out, "edits", cfg, paths, started_at=started)
    return EditsResult(out, report, prior, paths)


def _edits_folder(out: str) -> Path:
    """``--out`` as a writable folder that is not another command's output folder (whose summary.json the analysis
    would overwrite); an earlier edit analysis there is replaced."""
    folder = usable_folder(out)
    manifest = folder / MANIFEST
    if manifest.is_file():
        workflow = read_kind(folder) or "cpo"  # an unreadable manifest still marks a folder some command wrote
        if workflow != "edits":
            raise ConfigError(f"--out {out} is a `cpo {workflow}` run folder ({MANIFEST}): the edit analysis would "
                              f"overwrite its summary.json\n  fix: pass another folder, e.g. --out {Path(out) / 'edits'}")
    return folder


__all__ = ["EditsResult", "analyze_edits_job"]
