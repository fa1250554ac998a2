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
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from discff_cli.clip_resolve import load_clip_cli
from discff_cli.errors import DiscffError
from discff_cli.search.rerank import Fusion, Reranked, Reranker

__all__ = ["Fusion", "RayOptions", "Reranked", "Reranker", "SearchResult", "Searcher", "query_documents",
           "run_search", "search_document", "warn_depth"]


@dataclass
class SearchResult:
    """One finished query: its JSON-ready rows and what it measured (timings, U-Net passes spent)."""

    rows: list[dict]
    stats: dict[str, Any]


def run_search(query: str, index_dir: str, top: int | None, rerank: int | None, clip_spec: str | None,
               model: str | None, deltas: str | None, config, progress: bool = False,
               fusion: Fusion = Fusion()) -> tuple[list[dict], dict]:
    """Shortlist with the index's CLIP, then (optionally) rerank; returns JSON-ready rows and their provenance."""
    searcher = Searcher(index_dir, clip_spec, model, deltas, config, fusion)
    doc = search_document(searcher, query, top, rerank, progress)
    return doc.pop("results"), {k: v for k, v in doc.items() if k != "query"}


def search_document(searcher: "Searcher", query: str, top: int | None, rerank: int | None, progress: bool = False,
                    score: str | None = None) -> dict:
    """The `discff search --json` document of one query, from a Searcher that may serve many queries."""
    return searcher.document(query, searcher.search(query, top, rerank, progress, score), rerank, score)


def query_documents(searcher: "Searcher", queries: Sequence, top: int | None, rerank: int | None,
                    progress: bool = False, ray: "RayOptions | None" = None) -> Iterator[dict]:
    """The document of every query of a `--queries` file (query_file.Query), in the file's order.

    With `ray`, this process still shortlists every query (milliseconds each) and the rerank heads
    go to a pool of Ray actors (discff_cli/search/ray.py), each running the same `Reranker` as a
    local search; the documents are the ones a local run prints."""
    jobs = [(q.text, q.top or top, rerank if q.rerank is None else q.rerank, q.score) for q in queries]
    if ray is None or not any(n for _, _, n, _ in jobs):
        for text, k, n, score in jobs:
            yield search_document(searcher, text, k, n, progress, score)
        return
    yield from _ray_documents(searcher, jobs, ray)


@dataclass(frozen=True)
class RayOptions:
    """`--ray ADDRESS --workers N` of `search --queries` (index/ray_cluster.py says what ADDRESS means)."""

    address: str = "local"
    workers: int | None = None


def _ray_documents(searcher: "Searcher", jobs: list[tuple], ray: RayOptions) -> Iterator[dict]:
    from discff_cli.search.ray import RerankPool, RerankSpec

    spec = RerankSpec(searcher.rerank_model(), searcher.config, searcher.deltas, searcher.index_dir, searcher.fusion)
    with RerankPool(spec, ray.address, ray.workers, jobs=sum(1 for job in jobs if job[2])) as pool:
        planned = [searcher.shortlisted(text, k, n, score) for text, k, n, score in jobs]  # while actors load
        fingerprint = pool.ready()
        outcomes = pool.rerank([(p.query, p.head, (p.family,)) for p in planned if p.rerank])
        for p, (text, k, n, score) in zip(planned, jobs):
            yield searcher.document(text, searcher.finish(p, next(outcomes) if p.rerank else None), n, score,
                                    fingerprint)


@dataclass
class Shortlisted:
    """One query after its shortlist: what the rerank stage (here or on a Ray actor) starts from."""

    query: str
    top: int       # rows to return
    rerank: int    # size of the head to rerank (0: none)
    family: str    # score family of this query
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
        from index.search import SearchIndex

        self.index_dir, self.deltas, self.config, self.fusion = index_dir, deltas, config, fusion
        self.index = SearchIndex(index_dir)
        self.clip = load_clip_cli(clip_spec or self.index.clip_spec, config.device)
        self.model = model or self.index.manifest.get("model")
        self._scorer = None
        self._reranker: Reranker | None = None
        self._row_by_rel: dict[str, int] | None = None

    def rerank_model(self) -> str:
        """The diffusion model reranking uses (--model, else the index's)."""
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

    def search(self, query: str, top: int | None, rerank: int | None, progress: bool = False,
               score: str | None = None, fusion: Fusion | None = None) -> SearchResult:
        """The top rows for `query`: CLIP order, or the fused order of the reranked head
        (`score` and `fusion` override the configured score family and fusion for this query),
        with what it measured."""
        planned = self.shortlisted(query, top, rerank, score)
        outcome = None
        if planned.rerank:
            start = time.perf_counter()
            outcome = self.reranker().rerank(query, planned.head, (planned.family,), progress, fusion=fusion)
            outcome.stats["seconds"] = round(time.perf_counter() - start, 4)  # model load included (the service relies on it)
        return self.finish(planned, outcome)

    def shortlisted(self, query: str, top: int | None, rerank: int | None, score: str | None = None) -> Shortlisted:
        """The first stage for `query`: enough CLIP hits for both the rows and the rerank head."""
        k = top or rerank or 10
        warn_depth(rerank, len(self.index.rel_by_row))
        start = time.perf_counter()
        hits = self.shortlist(query, max(k, rerank or 0))
        return Shortlisted(query, k, rerank or 0, score or self.config.score, hits,
                           round(time.perf_counter() - start, 4))

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
        return SearchResult(rows, stats)

    def document(self, query: str, result: SearchResult, rerank: int | None, score: str | None = None,
                 fingerprint: str | None = None) -> dict:
        """The --json document of one finished query (`fingerprint`: the model's, when it was loaded elsewhere)."""
        doc = {"query": query, **self.provenance(rerank, fingerprint)}
        if rerank:
            if score:  # this query's own score family, everywhere the document names one
                doc.update(score=score, engine={**doc["engine"], "score": score})
            doc["stats"] = result.stats
        return {**doc, "results": result.rows}

    def provenance(self, rerank: int | None, fingerprint: str | None = None) -> dict[str, Any]:
        """What produced the results, for --json: index, CLIP, and (when reranking) model, deltas, score, engine."""
        doc: dict[str, Any] = {"index": str(self.index.store.path), "clip": self.index.clip_spec,
                               "clip_fingerprint": self.index.manifest["clip"]["fingerprint"]}
        if rerank:
            doc.update(model=self.model, model_fingerprint=fingerprint or self.scorer().parts.fingerprint,
                       deltas=self.deltas, score=self.config.score,
                       fusion={"method": self.fusion.method, "weight": self.fusion.weight},
                       engine=self.config.to_dict())
        return doc


def _display(path: str) -> str:
    """Paths under the working directory are shown relative to it, others absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
