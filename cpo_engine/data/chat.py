"""Chat-format logs: one JSON record per line, as chat APIs and their loggers write them.

    {"messages": [{"role": "system", "content": "You are a careful math tutor."},
                  {"role": "user", "content": "What is 12 * 7?"},
                  {"role": "assistant", "content": "84"}],
     "thumbs": "up"}

becomes one triplet row: the system message is ``prompt_text`` (no system message: the empty prompt, the
no-instruction baseline), the last user message before the answer is ``query_text``, the last assistant
message is kept as ``answer``, and the score or feedback field is ``score``: a number, true/false, or a
word (up/down, thumbs_up/thumbs_down, positive/negative, good/bad, yes/no, like/dislike -> 1/0). Which field
holds it: ``data.score_field`` (``--score-field``), else the field ``data.columns`` maps to ``score``, else
the first of :data:`SCORE_FIELDS` the first record has. Other top-level fields whose values are text,
numbers or booleans (an id, a model name, a timestamp) are kept as columns, so ``data.columns`` can map
them (``conversation_id=query_id``); ids absent are derived from the texts
(:func:`cpo_engine.data.columns.derive_ids`). Every error names the file and the line.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from cpo_engine.exceptions import DataError

#: Fields read as the score when none is named, in this order.
SCORE_FIELDS = ("score", "reward", "rating", "thumbs", "feedback", "label")
#: Feedback words and the score they stand for (compared lower-cased, stripped).
FEEDBACK = {"up": 1.0, "down": 0.0, "thumbs_up": 1.0, "thumbs_down": 0.0, "thumbsup": 1.0, "thumbsdown": 0.0,
            "positive": 1.0, "negative": 0.0, "good": 1.0, "bad": 0.0, "yes": 1.0, "no": 0.0,
            "like": 1.0, "dislike": 0.0, "true": 1.0, "false": 0.0, "\N{THUMBS UP SIGN}": 1.0,
            "\N{THUMBS DOWN SIGN}": 0.0}
_FIX = ('one JSON object per line with "messages": [{"role": "system", "content": PROMPT}, {"role": "user", '
        '"content": QUERY}, {"role": "assistant", "content": ANSWER}] and a score or feedback field '
        '(see docs/your_data.md)')


def is_chat(head: bytes) -> bool:
    """Whether the first record of a JSONL file (its first bytes) is a chat record (has ``messages``)."""
    lines = head.splitlines()
    for i, line in enumerate(lines):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:  # a first record longer than ``head`` is cut: its key decides
                return i == len(lines) - 1 and line.lstrip().startswith(b"{") and b'"messages"' in line

            return isinstance(record, dict) and isinstance(record.get("messages"), list)
    return False


def read_chat(source: str, opener: Any, score_field: str | None = None,
              columns: dict[str, str] | None = None) -> pa.Table:
    """The triplet-shaped table of a chat-format JSONL file (``opener()`` opens it as binary)."""
    rows: list[dict[str, Any]] = []
    field = score_field or next((k for k, v in (columns or {}).items() if v == "score"), None)
    with opener() as f:
        for lineno, raw in enumerate(_lines(f), start=1):
            if not raw.strip():
                continue
            record = _record(raw, source, lineno)
            if field is None:
                field = _pick_score_field(record, source, lineno)
            rows.append(_row(record, field, source, lineno))
    if not rows:
        raise DataError("the file holds no records", source=source, fix=_FIX)
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"a field has values of different types across lines ({str(exc).splitlines()[0]})",
                        source=source, fix="give each field one type in every record (e.g. ids always as text)"
                        ) from exc


def _lines(f: Any, chunk: int = 1 << 20) -> Any:
    """The lines of a binary file read in chunks (an object store's input stream has no readline)."""
    rest = b""
    while block := f.read(chunk):
        *lines, rest = (rest + block).split(b"\n")
        yield from lines
    if rest:
        yield rest


def _record(raw: bytes, source: str, lineno: int) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"line {lineno} is not valid JSON ({exc})", source=source,
                        fix="write one JSON object per line") from None
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise DataError(f'line {lineno} has no "messages" list (the first line did: the file is read as chat logs)',
                        source=source, column="messages", fix=_FIX)
    return record


def _pick_score_field(record: dict[str, Any], source: str, lineno: int) -> str:
    for name in SCORE_FIELDS:
        if name in record:
            return name
    fields = ", ".join(k for k in record if k != "messages") or "none"
    raise DataError(f"line {lineno} has no score or feedback field ({', '.join(SCORE_FIELDS)}); its fields: {fields}",
                    source=source,
                    fix="name the field that holds the score: --score-field NAME (data.score_field)")


def _row(record: dict[str, Any], field: str, source: str, lineno: int) -> dict[str, Any]:
    system, user, answer = _turns(record["messages"], source, lineno)
    if field not in record:
        raise DataError(f"line {lineno} has no '{field}' field (the score field)", source=source, column=field,
                        fix=f"give every record a '{field}', or drop the ungraded lines")
    row = {k: v for k, v in record.items() if k not in ("messages", field)
           and (v is None or isinstance(v, (str, int, float, bool)))}
    row.update(query_text=user, prompt_text=system, answer=answer, score=_score(record[field], field, source, lineno))
    return row


def _turns(messages: list[Any], source: str, lineno: int) -> tuple[str, str, str | None]:
    """(system prompt, the last user turn before the answer, the answer)."""
    system, user, answer = [], None, None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise DataError(f"line {lineno}: message {i} is not an object with a 'role'", source=source,
                            column="messages", fix=_FIX)
        text = _content(m.get("content"), source, lineno, i)
        if m["role"] in ("system", "developer"):
            system.append(text)
        elif m["role"] == "user":
            user, answer = text, None
        elif m["role"] == "assistant" and user is not None:
            answer = text
    if user is None:
        raise DataError(f"line {lineno} has no user message: there is no query", source=source, column="messages",
                        fix=_FIX)
    return "\n\n".join(system), user, answer


def _content(content: Any, source: str, lineno: int, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts: [{"type": "text", "text": ...}, ...]
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise DataError(f"line {lineno}: message {i} has no text content (got {type(content).__name__})", source=source,
                    column="messages", fix="give each message a 'content' string")


def _score(value: Any, field: str, source: str, lineno: int) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in FEEDBACK:
            return FEEDBACK[word]
        try:
            return float(word)
        except ValueError:
            pass
    raise DataError(f"line {lineno}: '{field}' is {value!r}, neither a number nor a feedback word", source=source,
                    column=field,
                    fix=f"use numbers or one of up/down, positive/negative, good/bad, yes/no in '{field}'")


__all__ = ["is_chat", "read_chat", "SCORE_FIELDS", "FEEDBACK"]
