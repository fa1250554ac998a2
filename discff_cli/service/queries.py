"""One /search request as a job for the model worker: `discff search --json`'s document, plus what a page needs.

The document is the one `search_document` builds for the command line (same keys, same values), so
the service answers exactly what `discff search --json` prints. On top of it the service adds the
request's `top` and `rerank`, the U-Net passes the query cost, the time of each stage, and each
row's `meta` (what the index holds about the file, for the page's hover).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from discff_cli.search.pipeline import Searcher, search_document
from discff_cli.search.request import SearchRequest


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


def run_query(searcher: TimedSearcher, query: SearchRequest, received: float, threads: int | None = None) -> dict:
    """Run `query` on the worker's searcher with `threads` CPU threads (None: as they are).

    `received` is when the request arrived (perf_counter), so the queueing time is reported too.
    """
    started = time.perf_counter()
    searcher.load_seconds = 0.0
    with cpu_threads(threads):
        result = searcher.search(query)
        doc = search_document(searcher, query, result)
    stats, load = result.stats, searcher.load_seconds
    return {
        **doc,
        "results": item_details(searcher, doc["results"]),
        "top": query.top,
        "rerank": query.rerank,
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
