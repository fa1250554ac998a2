"""Reading `discff search --queries FILE`: one query per line, or JSON Lines with per-query options.

A file whose first non-blank line starts with `{` is JSON Lines ({"query": ..., "top": ...,
"rerank": ..., "score": ...}); otherwise every non-blank line is one query. Every bad line is
reported as `FILE line N: why` before any model loads, so a typo on line 90 costs no search time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from discff_cli.engine.config import SCORES
from discff_cli.inputs import line_error, parse_json_line, read_lines

KIND = "Queries file"
_KEYS = ("query", "top", "rerank", "score")


@dataclass(frozen=True)
class Query:
    """One query and its own options; None means "the command line's value"."""

    text: str
    top: int | None = None
    rerank: int | None = None
    score: str | None = None


def read_queries(path: str | Path) -> list[Query]:
    """Every query of the file, in order; raises DiscffError naming the first bad line."""
    numbered = [(n, text) for n, text in enumerate(read_lines(path, KIND), start=1) if text.strip()]
    if not numbered:
        raise line_error(path, 1, "the file holds no query (one query per line, or JSON Lines with a \"query\" key)")
    if numbered[0][1].lstrip().startswith("{"):
        return [_json_query(parse_json_line(text, path, n), path, n) for n, text in numbered]
    return [Query(text.strip()) for _, text in numbered]


def _json_query(doc: object, path: str | Path, line: int) -> Query:
    if not isinstance(doc, dict):
        raise line_error(path, line, "expected a JSON object like {\"query\": \"a red cube\"}")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise line_error(path, line, f"unknown key '{unknown[0]}' (expected {', '.join(_KEYS)})")
    text = doc.get("query")
    if not isinstance(text, str) or not text.strip():
        raise line_error(path, line, "\"query\" must be a non-empty string")
    top = _count(doc.get("top"), "top", 1, path, line)
    rerank = _count(doc.get("rerank"), "rerank", 0, path, line)
    score = doc.get("score")
    if score is not None and score not in SCORES:
        raise line_error(path, line, f"\"score\" must be one of {', '.join(SCORES)}, not {score!r}")
    return Query(text.strip(), top, rerank, score)


def _count(value: object, key: str, minimum: int, path: str | Path, line: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise line_error(path, line, f"\"{key}\" must be an integer >= {minimum}, not {value!r}")
    return value
