"""Reading `discff search --queries FILE`: one query per line, or JSON Lines with per-query options.

A file whose first non-blank line starts with `{` is JSON Lines ({"query": ..., "top": ...,
"rerank": ..., "score": ..., "fusion": ..., "fusion_weight": ...}: the fields of a SearchRequest,
checked by the same `search_request` as the command line and the service); otherwise every non-blank
line is one query. Every bad line is reported as `FILE line N: why` before any model loads, so a typo
on line 90 costs no search time.
"""

from __future__ import annotations

from pathlib import Path

from discff_cli.errors import DiscffError
from discff_cli.inputs import line_error, parse_json_line, read_lines
from discff_cli.search.request import JSON_LINE, SearchRequest, search_request

KIND = "Queries file"


def read_queries(path: str | Path) -> list[SearchRequest]:
    """Every request of the file, in order (fields a line leaves out are None: the command line's);
    raises DiscffError naming the first bad line."""
    numbered = [(n, text) for n, text in enumerate(read_lines(path, KIND), start=1) if text.strip()]
    if not numbered:
        raise line_error(path, 1, "the file holds no query (one query per line, or JSON Lines with a \"query\" key)")
    json_lines = numbered[0][1].lstrip().startswith("{")
    return [_request(parse_json_line(text, path, n) if json_lines else {"query": text}, path, n)
            for n, text in numbered]


def _request(doc: object, path: str | Path, line: int) -> SearchRequest:
    if not isinstance(doc, dict):
        raise line_error(path, line, "expected a JSON object like {\"query\": \"a red cube\"}")
    try:
        return search_request(doc, spelling=JSON_LINE)
    except DiscffError as exc:
        raise line_error(path, line, _lower_first(str(exc))) from None


def _lower_first(sentence: str) -> str:
    """'Unknown key ...' reads 'FILE line 3: unknown key ...' after the line's name."""
    return sentence[:1].lower() + sentence[1:] if sentence[:1].isupper() and sentence[1:2].islower() else sentence
