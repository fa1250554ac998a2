"""One /search request as a job for the model worker: the pipeline's own rows, plus what a page needs.

The rows are whatever `Searcher.search` returns, so the service answers exactly what
`discff search --json` prints (each row carries its index `id`, for /images and /thumbs, and its
`clip_rank`). The document adds the time of each stage and the U-Net passes the query cost.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from discff_cli.search.pipeline import Fusion, Searcher

from discff_cli.engine.config import SCORES  # noqa: E402,F401 - re-exported for the app's validation


@dataclass(frozen=True)
class Query:
    """A validated /search request (`fusion` None: the service's own)."""

    q: str
    top: int | None
    rerank: int | None
    score: str | None = None
    fusion: Fusion | None = None


class TimedSearcher(Searcher):
    """The pipeline's Searcher, noting the seconds spent loading the diffusion model (the stats each
    search returns time the shortlist and the rerank, model load included)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.load_seconds = 0.0

    def scorer(self):
        start = time.perf_counter()
        loaded = super().scorer()
        self.load_seconds += time.perf_counter() - start
        return loaded


def run_query(searcher: TimedSearcher, query: Query, received: float, threads: int | None = None) -> dict:
    """Run `query` on the worker's searcher with `threads` CPU threads (None: as they are).

    `received` is when the request arrived (perf_counter), so the queueing time is reported too.
    """
    started = time.perf_counter()
    searcher.load_seconds = 0.0
    with cpu_threads(threads):
        result = searcher.search(query.q, query.top, query.rerank, score=query.score, fusion=query.fusion)
    rows, stats, load = result.rows, result.stats, searcher.load_seconds
    fusion = query.fusion or searcher.fusion
    return {
        "query": query.q,
        "results": item_details(searcher, rows),
        "top": query.top,
        "rerank": query.rerank,
        "score": (query.score or searcher.config.score) if query.rerank else None,
        "fusion": {"method": fusion.method, "weight": fusion.weight} if query.rerank else None,
        "model": searcher.model if query.rerank else None,
        "unet_passes": stats.get("unet_passes", 0),
        "timings_ms": {
            "queue": _ms(started - received),
            "shortlist": _ms(stats.get("shortlist_s", 0.0)),
            "model_load": _ms(load),
            "rerank": _ms(stats.get("rerank_s", 0.0) - load),
            "total": _ms(time.perf_counter() - received),
        },
    }


def item_details(searcher: Searcher, rows: list[dict]) -> list[dict]:
    """Each row with what the index holds about its file (pixels, bytes, modified) and its caption,
    for the page's hover; the rows themselves are `discff search --json`'s, unchanged."""
    from discff_cli.service.metadata import item_metadata

    meta = item_metadata(searcher, [row["id"] for row in rows])
    return [{**row, "meta": meta.get(row["id"], {})} for row in rows]


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


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000, 2)
