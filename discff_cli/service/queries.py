"""One /search request as a job for the model worker: the pipeline's own rows, plus what a page needs.

The rows are whatever `Searcher.search` returns (so the service answers exactly what
`discff search --json` prints); each row only gains its index `id` (for /images and /thumbs) and
`clip_rank` (its place in the CLIP shortlist, to show next to the reranked rank). The document adds
the time of each stage and the U-Net passes the query cost.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from discff_cli.pipeline import Searcher

SCORES = ("attention", "denoise", "discffusion")
# The pipeline takes a score choice once the scoring change lands; until then `score=` is refused
# with a sentence rather than silently ignored.
SEARCH_TAKES_SCORE = "score" in inspect.signature(Searcher.search).parameters


@dataclass(frozen=True)
class Query:
    """A validated /search request."""

    q: str
    top: int | None
    rerank: int | None
    score: str | None = None


class TimedSearcher(Searcher):
    """The pipeline's Searcher, noting the seconds spent loading the diffusion model and reranking.

    Timing lives here, around the pipeline's two hooks, so the pipeline itself stays the one the CLI runs.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stage_seconds = {"load": 0.0, "rerank": 0.0}
        self.loaded_scorer = None

    def scorer(self):
        start = time.perf_counter()
        self.loaded_scorer = super().scorer()
        self.stage_seconds["load"] += time.perf_counter() - start
        return self.loaded_scorer

    def _rerank(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super()._rerank(*args, **kwargs)
        finally:
            self.stage_seconds["rerank"] += time.perf_counter() - start

    def unet_passes(self) -> int:
        return self.loaded_scorer.unet_passes if self.loaded_scorer is not None else 0


def run_query(searcher: TimedSearcher, query: Query, received: float, threads: int | None = None) -> dict:
    """Run `query` on the worker's searcher with `threads` CPU threads (None: as they are).

    `received` is when the request arrived (perf_counter), so the queueing time is reported too.
    """
    started = time.perf_counter()
    searcher.stage_seconds = {"load": 0.0, "rerank": 0.0}
    passes = searcher.unet_passes()
    kwargs = {"score": query.score} if query.score is not None else {}
    with cpu_threads(threads):
        rows = searcher.search(query.q, query.top, query.rerank, **kwargs)
    done = time.perf_counter()
    rows = with_ids_and_clip_ranks(searcher, rows)
    load, rerank = searcher.stage_seconds["load"], searcher.stage_seconds["rerank"]
    return {
        "query": query.q,
        "results": rows,
        "top": query.top,
        "rerank": query.rerank,
        "score": query.score,
        "model": searcher.model if query.rerank else None,
        "unet_passes": searcher.unet_passes() - passes,
        "timings_ms": {
            "queue": _ms(started - received),
            "shortlist": _ms(done - started - rerank),
            "model_load": _ms(load),
            "rerank": _ms(rerank - load),
            "total": _ms(time.perf_counter() - received),
        },
    }


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run torch and FAISS with `count` threads, then restore them.

    Why: encoding one query and searching FAISS are too small to split; on a busy CPU, threads that
    wait for each other made a 2 ms shortlist take 15-300 ms. Switching costs about 10 µs.
    """
    if not count:
        yield
        return
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


def with_ids_and_clip_ranks(searcher: Searcher, rows: list[dict]) -> list[dict]:
    """Each row plus its index id and its rank by CLIP score among the rows (ties keep the pipeline's order)."""
    by_clip = sorted(range(len(rows)), key=lambda i: (-float(rows[i].get("clip_score") or 0.0), i))
    clip_rank = {i: place for place, i in enumerate(by_clip, start=1)}
    return [{**row, "id": searcher.item_id(row["path"]), "clip_rank": clip_rank[i]} for i, row in enumerate(rows)]


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000, 2)
