"""Graders: numeric (formats and strategies), exact/normalized, multiple choice, regex, user function."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.graders import (
    ExactGrader, MultipleChoiceGrader, NumericGrader, find_numbers, final_sentence, get_grader, parse_number,
)

# The dev data sit beside the repository (../shared/data, see its DATA.md); CPO_DEV_DATA points elsewhere.
DEV = Path(os.environ.get("CPO_DEV_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
                          / "prompt_oirl_llama2_dev.parquet"))


@pytest.mark.parametrize("token, value", [
    ("1,234", 1234.0), ("$1,234.50", 1234.5), ("€7", 7.0), ("-3", -3.0), ("−3", -3.0), (".5", 0.5),
    ("3/4", 0.75), ("12", 12.0), ("1/0", None),
])
def test_parse_number(token, value):
    assert parse_number(token) == value


@pytest.mark.parametrize("text, numbers", [
    ("He paid $1,200 for 3 chairs.", [1200.0, 3.0]),
    ("10 - 2 = 8 apples", [10.0, 2.0, 8.0]),         # a spaced minus is an operator, not a sign
    ("10-2", [10.0, 2.0]),
    ("x = -4.5 cm", [-4.5]),
    ("3, 4 and 5", [3.0, 4.0, 5.0]),                  # a list, not 3,4
    ("20 / 4 = 5", [5.0, 5.0]),                        # read as the fraction 20/4
    ("version 1.2.3", []),                            # not a number
])
def test_find_numbers(text, numbers):
    assert find_numbers(text) == numbers


@pytest.mark.parametrize("strategy, text, gold, score", [
    ("auto", "Step 1: 4 + 5 = 9. The answer is 12 apples.", 12, 1.0),
    ("auto", "Let me see: 3 + 4 = 7", "7", 1.0),
    ("auto", "#### 1,234", 1234, 1.0),
    ("auto", "so \\boxed{42}", 42.0, 1.0),
    ("auto", "The answer is: 10 - 4 = 6", 6, 1.0),       # an expression after the marker: last number
    ("auto", "She earns $6.84 per week.", 6.84, 1.0),
    ("auto", "The answer is 0.3333", "0.3333", 1.0),
    ("auto", "The answer is 1/3", 0.3333, 1.0),
    ("auto", "It is 12.", 13, 0.0),
    ("auto", "no numbers here", 1, 0.0),
    ("last_number", "The answer is 5. Check: 5 + 1 = 6", 5, 0.0),
    ("answer_is", "3 + 4 = 7", 7, 0.0),
    ("answer_is", "So the final answer is 7.", 7, 1.0),
    ("final_sentence", "We get 12 then 20. So she has 12 apples and 20 pears.", 12, 1.0),
    ("final_sentence", "The total is 12. Then she ate 3", 12, 0.0),
    ("final_sentence", "So she has 12 apples. Great job! 😊", 12, 1.0),    # number-free closers skipped
])
def test_numeric_grader(strategy, text, gold, score):
    assert NumericGrader(strategy=strategy).grade(text, gold) == score


def test_failed_call_grades_nan_not_zero():
    for spec in ("numeric", "exact", "mc", "regex:(\\d+)"):
        assert math.isnan(get_grader(spec).grade(None, "1"))


def test_final_sentence_keeps_decimals():
    assert final_sentence("First. It costs 6.84 dollars.\n") == "It costs 6.84 dollars"


def test_numeric_grader_rejects_non_numeric_gold():
    with pytest.raises(ConfigError, match="numeric gold"):
        NumericGrader().grade("42", "forty-two")


@pytest.mark.parametrize("normalized, text, gold, score", [
    (False, " Paris ", "Paris", 1.0),
    (False, "paris", "Paris", 0.0),
    (True, "The Paris!", "paris", 1.0),
    (True, "an apple", "Apple.", 1.0),
    (True, "apples", "apple", 0.0),
])
def test_exact_grader(normalized, text, gold, score):
    assert ExactGrader(normalized=normalized).grade(text, gold) == score


@pytest.mark.parametrize("text, gold, score", [
    ("The answer is (B).", "B", 1.0),
    ("Answer: c", "C", 1.0),
    ("I think (A) is wrong; (D) is right", "D", 1.0),
    ("B. Because it is blue", "(b)", 1.0),
    ("B", 1, 1.0),
    ("A quick look says the answer: E", "E", 1.0),
    ("I am not sure", "A", 0.0),
])
def test_multiple_choice_grader(text, gold, score):
    assert MultipleChoiceGrader().grade(text, gold) == score


def test_multiple_choice_respects_letter_range():
    assert MultipleChoiceGrader(letters="ABCD").extract("(E) or maybe (B)") == "B"


@pytest.mark.parametrize("spec, text, gold, score", [
    ("regex:Result:\\s*(\\S+)", "Result: 1,024 bytes", 1024, 1.0),
    ("regex:Result:\\s*(?P<answer>\\w+)", "Result: Blue", "blue", 1.0),
    ("regex:Result:\\s*(\\w+)", "no result line", "blue", 0.0),
])
def test_regex_grader(spec, text, gold, score):
    assert get_grader(spec).grade(text, gold) == score


def test_function_grader_by_import_path():
    g = get_grader("function:operator:contains")  # contains(text, gold)
    assert g.grade("the cat sat", "cat") == 1.0
    assert g.grade("the dog sat", "cat") == 0.0
    assert g.name == "function:operator:contains"


@pytest.mark.parametrize("spec, match", [
    ("function:no_such_module_xyz:f", "cannot import"),
    ("function:operator:no_such_fn", "no attribute"),
    ("function:operator", "package.module:function"),
    ("regex:(", "invalid pattern"),
    ("numeric:median", "strategy"),
    ("bleu", "unknown grader"),
])
def test_bad_grader_specs_fail_clearly(spec, match):
    with pytest.raises(ConfigError, match=match):
        get_grader(spec)


@pytest.mark.skipif(not DEV.exists(), reason=f"dev data not at {DEV} (set CPO_DEV_DATA)")
def test_last_number_grader_reproduces_the_logged_regrade():
    """The dev file's `score_last_number` is a last-number regrade of `raw_answer`: ours must agree."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(DEV, columns=["raw_answer", "gold_answer", "score_last_number"])
    t = t.filter(pc.is_valid(t["raw_answer"])).slice(0, 3000)
    g = get_grader("numeric:last_number")
    ours = [g.grade(a, b) for a, b in zip(t["raw_answer"].to_pylist(), t["gold_answer"].to_pylist())]
    agree = sum(o == y for o, y in zip(ours, t["score_last_number"].to_pylist())) / len(ours)
    assert agree > 0.99
