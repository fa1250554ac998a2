"""One /explain request as a job for the model worker: the map of one indexed image for one query.

It runs `discff explain`'s own code (discff_cli/render/explanation.py) on the worker's scorer, the one that
reranks /search, so the map of a result sums to the rerank score that result shows.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from pathlib import Path

from discff_cli.service.queries import TimedSearcher, cpu_threads


@dataclass(frozen=True)
class ExplainQuery:
    """A validated /explain request: an index id (never a path), the query and the score to map."""

    item_id: int
    q: str
    score: str | None = None


def run_explain(searcher: TimedSearcher, query: ExplainQuery, path: Path, received: float,
                threads: int | None = None) -> dict:
    """The explain document of (image `path`, query) with its PNG sheet as a data URL."""
    from discff_cli.render.explanation import document, explain, figure

    started = time.perf_counter()
    searcher.load_seconds = 0.0
    family = query.score or searcher.config.score
    with cpu_threads(threads):
        scorer = searcher.scorer()
        explanation, view = explain(scorer, path, query.q)
    title = f"\"{query.q}\" on #{query.item_id}: {family} {explanation.score(family):.4g}"
    buffer = io.BytesIO()
    figure(explanation, view, family, title).save(buffer, format="PNG")
    return {"id": query.item_id, "path": searcher.index.rel_by_row[query.item_id], "query": query.q,
            "model": searcher.model, "engine": searcher.config.to_dict(),
            **document(explanation, view.size[0], family),
            "png": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
            "timings_ms": {"queue": _ms(started - received), "model_load": _ms(searcher.load_seconds),
                           "total": _ms(time.perf_counter() - received)}}


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000, 2)
