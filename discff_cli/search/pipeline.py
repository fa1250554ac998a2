"""The two-stage pipeline every front end calls: CLIP/FAISS shortlist, then Discffusion rerank.

`discff search`, `discff demo` (and the service) hold one `Searcher` so the models load once and
the scorer's caches carry over between queries; the commands only parse and render.

The final order fuses the shortlist's CLIP score with the rerank score (discff_cli/search/fusion.py), so
reranking cannot bury what CLIP already found when the diffusion model knows less than CLIP.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from discff_cli.clip_resolve import load_clip_cli
from discff_cli.errors import DiscffError
from discff_cli.search.rerank import Fusion, Reranked, Reranker
from discff_cli.search.request import SearchRequest, search_request

__all__ = ["Fusion", "RayOptions", "Reranked", "Reranker", "SearchRequest", "SearchResult", "Searcher",
           "query_documents", "search_document", "search_request", "warn_depth"]


@dataclass
class SearchResult:
    """One finished query: its JSON-ready rows, what it measured (timings, U-Net passes spent) and the
    fusion that ordered its reranked head (None: CLIP order)."""

    rows: list[dict]
    stats: dict[str, Any]
    fusion: Fusion | None = None


def search_document(searcher: "Searcher", request: SearchRequest, result: SearchResult,
                    fingerprint: str | None = None) -> dict:
    """The document `discff search --json` prints for one request: built here and nowhere else, so the
    command line, `--queries` (local or on Ray), the service and the Python API answer alike.

    What produced the results comes first (index, CLIP and, when reranking, the model, its fingerprint,
    the deltas, this request's score family and fusion, the engine settings, the stats), then the rows.
    `fingerprint` is the model's when it was loaded elsewhere (a Ray actor)."""
    index = searcher.index
    doc: dict[str, Any] = {"query": request.query, "index": str(index.store.path), "clip": index.clip_spec,
                           "clip_fingerprint": index.manifest["clip"]["fingerprint"]}
    if request.rerank:
        score = request.score or searcher.config.score
        fusion = result.fusion or request.fusion_over(searcher.fusion)
        doc.update(model=searcher.model, model_fingerprint=fingerprint or searcher.scorer().parts.fingerprint,
                   deltas=searcher.deltas, score=score, fusion={"method": fusion.method, "weight": fusion.weight},
                   engine={**searcher.config.to_dict(), "score": score}, stats=result.stats)
    return {**doc, "results": result.rows}


def query_documents(searcher: "Searcher", requests: Sequence[SearchRequest], progress: bool = False,
                    ray: "RayOptions | None" = None) -> Iterator[dict]:
    """The document of every request (a `--queries` file's, each over the command line's options), in order.

    With `ray`, this process still shortlists every query (milliseconds each) and the rerank heads
    go to a pool of Ray actors (discff_cli/search/ray.py), each running the same `Reranker` as a
    local search; the documents are the ones a local run prints."""
    if ray is None or not any(r.rerank for r in requests):
        for request in requests:
            yield searcher.run(request, progress)
        return
    yield from _ray_documents(searcher, requests, ray)


@dataclass(frozen=True)
class RayOptions:
    """`--ray ADDRESS --workers N` of `search --queries` (index/ray_cluster.py says what ADDRESS means)."""

    address: str = "local"
    workers: int | None = None


def _ray_documents(searcher: "Searcher", requests: Sequence[SearchRequest], ray: RayOptions) -> Iterator[dict]:
    from discff_cli.search.ray import RerankPool, RerankSpec

    spec = RerankSpec(searcher.rerank_model(), searcher.config, searcher.deltas, searcher.index_dir, searcher.fusion)
    with RerankPool(spec, ray.address, ray.workers, jobs=sum(1 for r in requests if r.rerank)) as pool:
        planned = [searcher.shortlisted(r) for r in requests]  # while the actors load
        fingerprint = pool.ready()
        outcomes = pool.rerank([(p.query, p.head, (p.family,), p.fusion) for p in planned if p.rerank])
        for p, request in zip(planned, requests):
            result = searcher.finish(p, next(outcomes) if p.rerank else None)
            yield search_document(searcher, request, result, fingerprint)


@dataclass
class Shortlisted:
    """One query after its shortlist: what the rerank stage (here or on a Ray actor) starts from."""

    query: str
    top: int       # rows to return
    rerank: int    # size of the head to rerank (0: none)
    family: str    # score family of this query
    fusion: Fusion  # how its reranked head is ordered
    hits: list     # index.search.Hit, CLIP order
    shortlist_s: float

    @property
    def head(self) -> list:
        return self.hits[:self.rerank]


def warn_depth(rerank: int | None, count: int) -> None:
    """One line when --rerank asks for more images than the index holds (all of them are reranked)."""
    if rerank and rerank > count:
        print(f"note: --rerank {rerank} asks for more images than the index holds ({count}); all {count} are "
              "reranked.", file=sys.stderr)


def warn_unreadable(bad: list) -> None:
    """One warning line for the shortlisted files that could not be reranked."""
    if bad:
        print(f"warning: {len(bad)} shortlisted file(s) can no longer be read (first: '{bad[0].rel}'); "
              "they are not reranked — run `discff index build` to refresh the index.", file=sys.stderr)


class Searcher:
    """One index with its CLIP and, from the first rerank on, its Discffusion scorer.

    Loading the models costs seconds, so a caller with several queries (`discff demo`) keeps one
    Searcher and pays that once; the scorer's text, latent and empty-prompt caches carry over
    between queries.
    """

    def __init__(self, index_dir: str, clip_spec: str | None, model: str | None, deltas: str | None, config,
                 fusion: Fusion = Fusion()) -> None:
        from discff_cli.engine.deltas import model_for_deltas
        from index.search import SearchIndex

        self.index_dir, self.deltas, self.config, self.fusion = index_dir, deltas, config, fusion
        self.index = SearchIndex(index_dir)
        self.clip = load_clip_cli(clip_spec or self.index.clip_spec, config.device)
        self.model = model_for_deltas(model, deltas, default=self.index.manifest.get("model"))
        self._scorer = None
        self._reranker: Reranker | None = None
        self._row_by_rel: dict[str, int] | None = None

    def rerank_model(self) -> str:
        """The diffusion model reranking uses (--model, else the one --deltas records, else the index's)."""
        if not self.model:
            raise DiscffError("The index records no model for reranking; pass --model.")
        return self.model

    def scorer(self):
        if self._scorer is None:
            from discff_cli.engine.scorer import load_scorer

            self._scorer = load_scorer(self.rerank_model(), self.config, self.deltas)
        return self._scorer

    def reranker(self) -> Reranker:
        """The local rerank stage (loads the diffusion model on first use)."""
        if self._reranker is None:
            self._reranker = Reranker(self.scorer(), self.index_dir, self.fusion)
        return self._reranker

    @property
    def scorer_loaded(self) -> bool:
        """Whether the diffusion model is loaded yet (it loads on the first rerank)."""
        return self._scorer is not None

    def image_path(self, item_id: int) -> Path:
        """The indexed file with this index id (its row); the service serves files by id, never by a sent path."""
        rels = self.index.rel_by_row
        if not 0 <= item_id < len(rels):
            raise DiscffError(f"No image has id {item_id}; this index's ids run from 0 to {len(rels) - 1}.")
        return self.index.root / rels[item_id]

    def item_id(self, path: str) -> int | None:
        """The index id of a result row's `path` (as `search` displays it), or None if it is not indexed."""
        if self._row_by_rel is None:
            self._row_by_rel = {rel: row for row, rel in enumerate(self.index.rel_by_row)}
        rel = os.path.relpath(os.path.abspath(path), self.index.root)
        return self._row_by_rel.get(Path(rel).as_posix())

    def shortlist(self, query: str, k: int) -> list:
        from index.search import search_text

        return search_text(self.index, self.clip, query, k)

    def request(self, query: "SearchRequest | str", top: int | None = None, rerank: int | None = None,
                score: str | None = None, fusion: Fusion | None = None) -> SearchRequest:
        """`query` as a SearchRequest; the Python API's keywords are checked by the one `search_request`."""
        if isinstance(query, SearchRequest):
            return query
        values = {"query": query, "top": top, "rerank": rerank, "score": score}
        if fusion is not None:
            values.update(fusion=fusion.method, fusion_weight=fusion.weight)
        return search_request(values)

    def run(self, query: "SearchRequest | str", progress: bool = False, **options: Any) -> dict:
        """Search and return the `discff search --json` document (`options`: top, rerank, score, fusion)."""
        request = self.request(query, **options)
        return search_document(self, request, self.search(request, progress=progress))

    def search(self, query: "SearchRequest | str", top: int | None = None, rerank: int | None = None,
               progress: bool = False, score: str | None = None, fusion: Fusion | None = None) -> SearchResult:
        """The top rows for a request (or a query text with its options): CLIP order, or the fused order
        of the reranked head, with what it measured."""
        planned = self.shortlisted(self.request(query, top, rerank, score, fusion))
        outcome = None
        if planned.rerank:
            start = time.perf_counter()
            outcome = self.reranker().rerank(planned.query, planned.head, (planned.family,), progress,
                                             fusion=planned.fusion)
            outcome.stats["seconds"] = round(time.perf_counter() - start, 4)  # model load included (the service relies on it)
        return self.finish(planned, outcome)

    def shortlisted(self, request: SearchRequest) -> Shortlisted:
        """The first stage of `request`: enough CLIP hits for both the rows and the rerank head."""
        rerank = request.rerank or 0
        warn_depth(rerank, len(self.index.rel_by_row))
        start = time.perf_counter()
        hits = self.shortlist(request.query, max(request.rows, rerank))
        return Shortlisted(request.query, request.rows, rerank, request.score or self.config.score,
                           request.fusion_over(self.fusion), hits, round(time.perf_counter() - start, 4))

    def finish(self, planned: Shortlisted, outcome: Reranked | None) -> SearchResult:
        """The result rows of a shortlist and its rerank (None: CLIP order), and their stats."""
        stats: dict[str, Any] = {"shortlist_s": planned.shortlist_s, "rerank_s": 0.0, "unet_passes": 0}
        clip_rank = {h.row: h.rank for h in planned.hits}
        hits, scores, fused = planned.hits, {}, {}
        if outcome is not None:
            warn_unreadable(outcome.unreadable)
            hits, scores, fused = outcome.hits + planned.hits[planned.rerank:], outcome.scores, outcome.fused
            rerank_stats = {k: v for k, v in outcome.stats.items() if k != "seconds"}
            stats.update(rerank_s=outcome.stats["seconds"], **rerank_stats, skipped=[h.rel for h in outcome.unreadable])
        shown = hits[:planned.top]
        stored = self.index.sidecars([hit.row for hit in shown])  # the caption the sample came with
        rows = [{"rank": rank, "path": _display(hit.path), "clip_score": round(hit.clip_score, 6),
                 "clip_rank": clip_rank[hit.row], "rerank_score": scores.get(hit.row),
                 "fused_score": fused.get(hit.row), "id": hit.row,
                 "caption": stored.get(hit.row, {}).get("caption")}
                for rank, hit in enumerate(shown, start=1)]
        return SearchResult(rows, stats, outcome.fusion if outcome is not None else None)


def _display(path: str) -> str:
    """Paths under the working directory are shown relative to it, others absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
