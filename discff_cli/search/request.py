"""One search request, whichever way it comes in: the command line, a `--queries` line, Ray, HTTP.

`SearchRequest` is what a front end asks the pipeline (pipeline.py) for, and `search_request` is the
one place its fields are checked: every problem is one sentence (a DiscffError) that names the field
as that front end spells it (`--top` on the command line, `"top"` in a queries file, `top` in a URL),
so the three front ends cannot drift apart. A field left as None takes the searcher's own setting
(the command line's --score and --fusion, or the service's defaults); the service adds its `Limits`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from discff_cli.engine.config import SCORES
from discff_cli.errors import DiscffError
from discff_cli.search.fusion import FUSIONS
from discff_cli.search.rerank import Fusion

DEFAULT_ROWS = 10  # rows when neither top nor rerank says how many


@dataclass(frozen=True)
class SearchRequest:
    """A validated query and its own options (None: the searcher's setting)."""

    query: str
    top: int | None = None            # rows to return (default: rerank, else 10)
    rerank: int | None = None         # head of the shortlist to rerank (None or 0: none)
    score: str | None = None          # score family ordering the reranked head
    fusion: str | None = None         # zsum, rrf or none
    fusion_weight: float | None = None

    @property
    def rows(self) -> int:
        """How many rows the answer holds."""
        return self.top or self.rerank or DEFAULT_ROWS

    def over(self, defaults: "SearchRequest") -> "SearchRequest":
        """This request with each field it leaves as None taken from `defaults` (a queries file's line over the
        command line's options)."""
        return replace(self, **{f.name: getattr(defaults, f.name) for f in fields(self)
                                if f.name != "query" and getattr(self, f.name) is None})

    def fusion_over(self, default: Fusion) -> Fusion:
        """The fusion this request asks for; either half it leaves out is `default`'s."""
        return Fusion(self.fusion or default.method,
                      default.weight if self.fusion_weight is None else self.fusion_weight)


FIELDS = tuple(f.name for f in fields(SearchRequest))


@dataclass(frozen=True)
class Limits:
    """Bounds a service puts on requests (None: unbounded, as on the command line)."""

    max_top: int | None = None
    max_rerank: int | None = None
    max_query_chars: int | None = None


@dataclass(frozen=True)
class Spelling:
    """How a front end names the fields in its messages, and an example of a good query."""

    names: Mapping[str, str] = field(default_factory=dict)
    example: str = '"a red cube"'

    def name(self, key: str) -> str:
        return self.names.get(key, key)


CLI = Spelling({"query": "The query", "top": "--top", "rerank": "--rerank", "score": "--score",
                "fusion": "--fusion", "fusion_weight": "--fusion-weight"}, 'discff search "a red cube"')
JSON_LINE = Spelling({key: f'"{key}"' for key in FIELDS}, '{"query": "a red cube"}')
HTTP = Spelling({"query": "q", "fusion_weight": "weight"}, "/search?q=a+red+cube")

_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def search_request(values: Mapping[str, Any], limits: Limits = Limits(), spelling: Spelling = Spelling()) -> SearchRequest:
    """The one check of a request's fields (`values` maps FIELDS to ints, floats or their text, as a URL
    sends them; a missing key or None is "not given"); raises DiscffError with one sentence."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise DiscffError(f"Unknown key '{unknown[0]}' (expected "
                          f"{', '.join(spelling.name(k) for k in FIELDS)}).")
    return SearchRequest(
        query=_query(values.get("query"), limits.max_query_chars, spelling),
        top=_count(values.get("top"), spelling.name("top"), 1, limits.max_top),
        rerank=_count(values.get("rerank"), spelling.name("rerank"), 0, limits.max_rerank),
        score=_choice(values.get("score"), spelling.name("score"), SCORES),
        fusion=_choice(values.get("fusion"), spelling.name("fusion"), FUSIONS),
        fusion_weight=_weight(values.get("fusion_weight"), spelling.name("fusion_weight")),
    )


def _shown(value: Any) -> str:
    return repr(value)[:40]


def _query(value: Any, max_chars: int | None, spelling: Spelling) -> str:
    name = spelling.name("query")
    if value is not None and not isinstance(value, str):
        raise DiscffError(f"{name} must be text, not {_shown(value)}.")
    if not value or not value.strip():
        raise DiscffError(f"{name} is empty; give the text to search for, e.g. {spelling.example}.")
    text = value.strip()
    if max_chars is not None and len(text) > max_chars:
        raise DiscffError(f"{name} is {len(text)} characters long; the limit is {max_chars}.")
    return text


def _count(value: Any, name: str, low: int, high: int | None) -> int | None:
    if value is None:
        return None
    bounds = f"from {low} to {high}" if high is not None else f">= {low}"
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise DiscffError(f"{name} must be an integer {bounds}, not {_shown(value)}.")
    if number < low or (high is not None and number > high):
        raise DiscffError(f"{name} must be an integer {bounds}, not {number}.")
    return number


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise DiscffError(f"{name} must be one of {', '.join(allowed)}, not {_shown(value)}.")
    return value


def _weight(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        weight = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        weight = None
    if weight is None or not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        raise DiscffError(f"{name} must be a number from 0 to 1, not {_shown(value)}.")
    return weight
