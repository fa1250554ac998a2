"""The two-stage pipeline every front end calls: CLIP/FAISS shortlist, then Discffusion rerank.

`discff search`, `discff demo` (and the service) hold one `Searcher` so the models load once and
the scorer's caches carry over between queries; the commands only parse and render.

The final order fuses the shortlist's CLIP score with the rerank score (discff_cli/fusion.py), so
reranking cannot bury what CLIP already found when the diffusion model knows less than CLIP.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

from discff_cli.clip_resolve import load_clip_cli
from discff_cli.errors import DiscffError
from discff_cli.fusion import DEFAULT_FUSION, DEFAULT_WEIGHT, final_order


@dataclass(frozen=True)
class Fusion:
    """How the final order combines CLIP and the rerank score (fusion.py)."""

    method: str = DEFAULT_FUSION
    weight: float = DEFAULT_WEIGHT


def run_search(query: str, index_dir: str, top: int | None, rerank: int | None, clip_spec: str | None,
               model: str | None, deltas: str | None, config, progress: bool = False,
               fusion: Fusion = Fusion()) -> tuple[list[dict], dict]:
    """Shortlist with the index's CLIP, then (optionally) rerank; returns JSON-ready rows and their provenance."""
    searcher = Searcher(index_dir, clip_spec, model, deltas, config, fusion)
    rows = searcher.search(query, top, rerank, progress)
    return rows, {**searcher.provenance(rerank), **({"stats": searcher.last_stats} if rerank else {})}


def search_document(searcher: "Searcher", query: str, top: int | None, rerank: int | None, progress: bool = False,
                    score: str | None = None) -> dict:
    """The `discff search --json` document of one query, from a Searcher that may serve many queries."""
    results = searcher.search(query, top, rerank, progress, score)
    doc = {"query": query, **searcher.provenance(rerank)}
    if rerank:
        if score:  # this query's own score family, everywhere the document names one
            doc.update(score=score, engine={**doc["engine"], "score": score})
        doc["stats"] = searcher.last_stats
    return {**doc, "results": results}


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
        self.last_stats: dict[str, Any] = {}  # timings and U-Net passes of the last search
        self._row_by_rel: dict[str, int] | None = None

    def scorer(self):
        if self._scorer is None:
            from discff_cli.engine.scorer import load_scorer

            self._scorer = load_scorer(self.model, self.config, self.deltas)
        return self._scorer

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
               score: str | None = None) -> list[dict]:
        """The top rows for `query`: CLIP order, or the fused order of the reranked head
        (`score` overrides the configured score family for this query)."""
        k = top or rerank or 10
        start = time.perf_counter()
        hits = self.shortlist(query, max(k, rerank or 0))
        self.last_stats = {"shortlist_s": round(time.perf_counter() - start, 4), "rerank_s": 0.0, "unet_passes": 0}
        clip_rank = {h.row: h.rank for h in hits}
        scores: dict[int, float] = {}
        if rerank:
            hits, scores = self._reranked(query, hits, rerank, progress, score or self.config.score)
        return [{"rank": rank, "path": _display(hit.path), "clip_score": round(hit.clip_score, 6),
                 "clip_rank": clip_rank[hit.row], "rerank_score": scores.get(hit.row), "id": hit.row}
                for rank, hit in enumerate(hits[:k], start=1)]

    def _reranked(self, query: str, hits: list, rerank: int, progress: bool,
                  family: str) -> tuple[list, dict[int, float]]:
        start = time.perf_counter()
        head, rest = hits[:rerank], hits[rerank:]
        readable, unreadable = self.readable(head)
        scorer = self.scorer()
        passes, empty = scorer.unet_passes, scorer.empty_passes
        values = self.rerank_readings(query, readable, (family,), progress).score(family)
        values = values.mean(dim=1).double().numpy()
        order = final_order([h.clip_score for h in readable], values, self.fusion.method, self.fusion.weight)
        self.last_stats.update(rerank_s=round(time.perf_counter() - start, 4), unet_passes=scorer.unet_passes - passes,
                               empty_prompt_passes=scorer.empty_passes - empty, skipped=[h.rel for h in unreadable])
        scores = {h.row: float(v) for h, v in zip(readable, values)}
        return [readable[i] for i in order] + unreadable + rest, scores

    def rerank_readings(self, query: str, hits: Sequence, families: Sequence[str], progress: bool = False):
        """Readings of (hit, query) for every hit, from one set of U-Net passes (engine/scores.py)."""
        from discff_cli.engine.latent_store import seed_from_store

        if not self.model:
            raise DiscffError("The index records no model for reranking; pass --model.")
        scorer = self.scorer()
        paths = [h.path for h in hits]
        seed_from_store(scorer, self.index_dir, paths)  # with --latents: no VAE, no empty-prompt passes
        return scorer.read_pairs(paths, [query] * len(paths), families, progress=progress)

    def readable(self, hits: list) -> tuple[list, list]:
        """Hits whose file can still be decoded, and the others (vanished or changed into garbage since
        indexing): those keep their CLIP order after the reranked ones, with one warning line."""
        from index.imageio import ImageDecodeError, open_rgb

        good, bad = [], []
        for hit in hits:
            try:
                open_rgb(hit.path)
                good.append(hit)
            except (ImageDecodeError, OSError):
                bad.append(hit)
        if bad:
            print(f"warning: {len(bad)} shortlisted file(s) can no longer be read (first: '{bad[0].rel}'); "
                  "they are not reranked — run `discff index build` to refresh the index.", file=sys.stderr)
        return good, bad

    def provenance(self, rerank: int | None) -> dict[str, Any]:
        """What produced the results, for --json: index, CLIP, and (when reranking) model, deltas, score, engine."""
        doc: dict[str, Any] = {"index": str(self.index.store.path), "clip": self.index.clip_spec,
                               "clip_fingerprint": self.index.manifest["clip"]["fingerprint"]}
        if rerank:
            scorer = self.scorer()
            doc.update(model=self.model, model_fingerprint=scorer.parts.fingerprint, deltas=self.deltas,
                       score=self.config.score, fusion={"method": self.fusion.method, "weight": self.fusion.weight},
                       engine=self.config.to_dict())
        return doc


def _display(path: str) -> str:
    """Paths under the working directory are shown relative to it, others absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
