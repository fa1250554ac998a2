"""The two-stage pipeline every front end calls: CLIP/FAISS shortlist, then Discffusion rerank.

`discff search`, `discff demo` (and the service) hold one `Searcher` so the models load once and
the scorer's caches carry over between queries; the commands only parse and render.
"""

from __future__ import annotations

import os
from pathlib import Path

from discff_cli.clip_resolve import load_clip_cli
from discff_cli.errors import DiscffError


def run_search(query: str, index_dir: str, top: int | None, rerank: int | None, clip_spec: str | None,
               model: str | None, deltas: str | None, config, progress: bool = False) -> tuple[list[dict], str | None]:
    """Shortlist with the index's CLIP, then (optionally) rerank; returns JSON-ready rows and the rerank model."""
    searcher = Searcher(index_dir, clip_spec, model, deltas, config)
    return searcher.search(query, top, rerank, progress), searcher.model


class Searcher:
    """One index with its CLIP and, from the first rerank on, its Discffusion scorer.

    Loading the models costs seconds, so a caller with several queries (`discff demo`) keeps one
    Searcher and pays that once; the scorer's text and latent caches carry over between queries.
    """

    def __init__(self, index_dir: str, clip_spec: str | None, model: str | None, deltas: str | None, config) -> None:
        from index.search import SearchIndex

        self.index_dir, self.deltas, self.config = index_dir, deltas, config
        self.index = SearchIndex(index_dir)
        self.clip = load_clip_cli(clip_spec or self.index.clip_spec, config.device)
        self.model = model or self.index.manifest.get("model")
        self._scorer = None
        self._row_by_rel: dict[str, int] | None = None

    def scorer(self):
        if self._scorer is None:
            from discff_cli.engine.scorer import load_scorer

            self._scorer = load_scorer(self.model, self.config, self.deltas)
        return self._scorer

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

    def search(self, query: str, top: int | None, rerank: int | None, progress: bool = False) -> list[dict]:
        from index.search import search_text

        k = top or rerank or 10
        hits = search_text(self.index, self.clip, query, max(k, rerank or 0))
        rerank_scores: dict[int, float] = {}
        if rerank:
            head = hits[:rerank]
            scores = self._rerank(query, head, progress)
            rerank_scores = {h.row: float(s) for h, s in zip(head, scores)}
            order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), i))
            hits = [head[i] for i in order] + hits[rerank:]
        return [{"rank": rank, "path": _display(hit.path), "clip_score": round(hit.clip_score, 6),
                 "rerank_score": rerank_scores.get(hit.row)} for rank, hit in enumerate(hits[:k], start=1)]

    def _rerank(self, query: str, head: list, progress: bool):
        from discff_cli.engine.latent_store import seed_from_store

        if not self.model:
            raise DiscffError("The index records no model for reranking; pass --model.")
        _check_files(head)
        scorer = self.scorer()
        seed_from_store(scorer, self.index_dir, [h.path for h in head])  # skips the VAE when built with --latents
        return scorer.score_images([h.path for h in head], query, progress=progress)


def _check_files(hits) -> None:
    missing = [h.path for h in hits if not Path(h.path).is_file()]
    if missing:
        raise DiscffError(f"{len(missing)} indexed file(s) no longer exist (first: '{missing[0]}'); "
                          "run `discff index build` again before reranking.")


def _display(path: str) -> str:
    """Paths under the working directory are shown relative to it, others absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
