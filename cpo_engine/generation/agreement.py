"""How well a grader agrees with recorded labels on recorded answers.

On a triplet table with the model's answer text (``raw_answer``), a gold answer and one or more
label columns (e.g. the dev file's ``score``, ``score_last_number``, ``score_final_sentence``),
regrade every answer with each grader and report per (grader, label): agreement, Cohen's kappa,
mean score under both, and the Kendall tau between the per-prompt mean scores (a grader that agrees
on 98% of rows can still reorder prompts, and prompt rankings are what CPO learns).

    python -m cpo_engine.generation.agreement ../shared/data/prompt_oirl_llama2_dev.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.generation.graders import get_grader

DEFAULT_GRADERS = ("numeric", "numeric:last_number", "numeric:answer_is", "numeric:final_sentence")
DEFAULT_LABELS = ("score", "score_last_number", "score_final_sentence")


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    po = float(np.mean(a == b))
    pe = float(np.mean(a) * np.mean(b) + (1 - np.mean(a)) * (1 - np.mean(b)))
    return (po - pe) / (1 - pe) if pe < 1 else float("nan")


def grader_agreement(table: pa.Table, graders: Sequence[str] = DEFAULT_GRADERS,
                     labels: Sequence[str] = DEFAULT_LABELS, text_column: str = "raw_answer",
                     gold_column: str = "gold_answer") -> dict[str, Any]:
    """Agreement of each grader with each label column on rows that have an answer text."""
    from scipy.stats import kendalltau

    t = table.filter(pc.is_valid(table[text_column]))
    labels = [c for c in labels if c in t.column_names]
    for c in labels:
        t = t.filter(pc.is_valid(t[c]))
    texts, golds = t[text_column].to_pylist(), t[gold_column].to_pylist()
    prompts = np.asarray(t["prompt_id"].to_pylist()) if "prompt_id" in t.column_names else None
    out: dict[str, Any] = {"rows": t.num_rows, "graders": {}}
    for spec in graders:
        g = get_grader(spec)
        ours = np.array([g.grade(x, y) for x, y in zip(texts, golds)], dtype=np.float64)
        out["graders"][spec] = {"mean_score": float(ours.mean()), "vs": {}}
        for lab in labels:
            y = np.asarray(t[lab].to_numpy(zero_copy_only=False), dtype=np.float64)
            row = {"agreement": float(np.mean(ours == y)), "kappa": cohen_kappa(ours, y),
                   "label_mean": float(y.mean())}
            if prompts is not None:
                ids = np.unique(prompts)
                m_ours = [ours[prompts == p].mean() for p in ids]
                m_lab = [y[prompts == p].mean() for p in ids]
                row["prompt_rank_kendall_tau"] = float(kendalltau(m_ours, m_lab).statistic)
            out["graders"][spec]["vs"][lab] = row
    return out


def main(argv: list[str] | None = None) -> int:
    from cpo_engine.data import read_table

    p = argparse.ArgumentParser(description="Agreement of graders with recorded labels.")
    p.add_argument("path", help="table with raw_answer, gold_answer, prompt_id and label columns")
    p.add_argument("--graders", nargs="+", default=list(DEFAULT_GRADERS))
    p.add_argument("--labels", nargs="+", default=list(DEFAULT_LABELS))
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    res = grader_agreement(read_table(args.path), args.graders, args.labels)
    res["source"] = str(args.path)
    text = json.dumps(res, indent=2)
    if args.out:
        from cpo_engine.utils import atomic_write_text

        atomic_write_text(Path(args.out), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
