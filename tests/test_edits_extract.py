"""Edit extraction: family detectors, surface features, diff motifs."""

from __future__ import annotations

import pytest

from cpo_engine.edits import DetectorConfig, diff_spans, extract_edit, family_presence, surface_features
from cpo_engine.edits.simulate import PHRASES
from cpo_engine.taxonomy import EDIT_FAMILIES

BASE = "Solve the problem below."


@pytest.mark.parametrize(
    ("added", "family"),
    [
        ("Let's think step by step.", "step_by_step"),
        ("Explain your reasoning one step at a time.", "step_by_step"),
        ("Reflect on how confident you are in your reasoning.", "meta_cognitive"),
        ("Follow these instructions exactly; they take priority.", "meta_instruction"),
        ("Your answer must account for every possible case in great detail.", "complexity"),
        ("You are an expert mathematician.", "persona"),
        ("Imagine a panel of experts discussing it.", "persona"),
        ("Break the problem into smaller sub-problems.", "decomposition"),
        ("Respond with only the final number.", "answer_format"),
        ("Double-check the arithmetic and verify the result.", "verification"),
        ("Be brief.", "conciseness"),
    ],
)
def test_added_phrase_is_detected_as_its_family(added: str, family: str) -> None:
    rec = extract_edit(BASE, f"{BASE} {added}")
    assert rec.families[family] == 1
    assert set(rec.families) == set(EDIT_FAMILIES)


@pytest.mark.parametrize("family", sorted(PHRASES))
def test_removing_a_phrase_flips_the_sign(family: str) -> None:
    child = f"{BASE} {PHRASES[family]}"
    fwd, back = extract_edit(BASE, child).families, extract_edit(child, BASE).families
    assert fwd[family] == 1 and back[family] == -1
    assert {f for f, v in fwd.items() if v} == {family}


def test_rewording_inside_an_instruction_does_not_add_the_family() -> None:
    rec = extract_edit("Let's think step by step.", "Let's think carefully step by step.")
    assert rec.families["step_by_step"] == 0
    assert rec.inserted == ["carefully"] and rec.deleted == []
    assert rec.motifs == {"+ carefully": 1}


def test_size_rules_mark_elaboration_and_shortening() -> None:
    long = BASE + " " + " ".join(f"Consider item number {i} of the list carefully." for i in range(6))
    assert extract_edit(BASE, long).families["complexity"] == 1
    assert extract_edit(long, BASE).families["conciseness"] == 1
    strict = DetectorConfig(complexity_min_added_words=10_000)
    assert extract_edit(BASE, long, strict).families["complexity"] == 0


def test_surface_features_count_words_sentences_imperatives() -> None:
    s = surface_features("Read the question. Then solve it step by step! The answer is:")
    assert s["words"] == 12 and s["sentences"] == 3 and s["imperatives"] == 1
    rec = extract_edit("Solve it.", "Solve it. Check it.")
    assert rec.surface["d_words"] == 2 and rec.surface["d_sentences"] == 1 and rec.surface["d_imperatives"] == 1
    assert surface_features("") == {"words": 0.0, "sentences": 0.0, "imperatives": 0.0, "readability": 0.0}


def test_diff_motifs_are_signed_ngrams() -> None:
    ins, dele = diff_spans("The answer is:", "Let's think step by step:")
    rec = extract_edit("The answer is:", "Let's think step by step:")
    assert "+ step by step" in rec.motifs and "- the answer is" in rec.motifs
    assert ins and dele


def test_unknown_lexicon_family_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown families"):
        family_presence("x", DetectorConfig(lexicons={"politeness": (r"\bplease\b",)}))


def test_custom_lexicon_replaces_a_family_and_is_not_cached_across_configs() -> None:
    custom = DetectorConfig(lexicons={"persona": (r"\bwizard\b",)})
    child = f"{BASE} You are a wizard."
    assert extract_edit(BASE, child, custom).families["persona"] == 1
    assert extract_edit(BASE, f"{BASE} You are an expert.", custom).families["persona"] == 0
    assert extract_edit(BASE, f"{BASE} You are an expert.").families["persona"] == 1


def test_describe_edits_frame() -> None:
    from cpo_engine.edits import describe_edits

    df = describe_edits([(BASE, f"{BASE} Let's think step by step."), (f"{BASE} Be brief.", BASE)])
    assert df["fam_step_by_step"].tolist() == [1, 0] and df["fam_conciseness"].tolist() == [0, -1]
    assert df.loc[0, "inserted"] == "let's think step by step ." and df.loc[1, "deleted"] == "be brief ."


def test_every_search_operator_edit_is_detected_as_its_family() -> None:
    """The edit prior weights the proposer's operators by family, so analysis and proposer must agree
    on what each operator's edit is."""
    import numpy as np

    from cpo_engine.search.operators import OPERATORS

    checked = 0
    for op in OPERATORS:
        if op.direction != 1 or op.needs_donor or not op.name.startswith("add_"):
            continue
        for seed in range(6):
            child = op.fn(BASE, np.random.default_rng(seed), None)
            if child is not None:
                assert extract_edit(BASE, child).families[op.family] == 1, (op.name, child)
                checked += 1
    assert checked >= 20
