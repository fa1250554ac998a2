"""`discff search QUERY [--rerank N]`: CLIP/FAISS shortlist, optionally reranked with Discffusion."""

from __future__ import annotations

import os
from pathlib import Path

import click

from discff_cli.clip_resolve import library_errors, load_clip_cli
from discff_cli.commands.index_cmd import index_option
from discff_cli.errors import DiscffError
from discff_cli.options import deltas_option, engine_options, json_option, pop_engine_config
from discff_cli.render import print_json, print_table


@click.command()
@click.argument("query")
@index_option
@click.option("--top", "top", type=click.IntRange(min=1), default=None,
              help="Results to show (default 10, or N with --rerank N).")
@click.option("--rerank", type=click.IntRange(min=1), default=None,
              help="Re-score the top N of the shortlist with Discffusion and order by that score.")
@click.option("--clip", default=None,
              help="CLIP to encode the query; must be the one the index was built with (default: the index's).")
@engine_options(model_default=None)
@deltas_option
@json_option
def search(query: str, index_dir: str, top: int | None, rerank: int | None, clip: str | None, model: str | None,
           deltas: str | None, as_json: bool, **engine: object) -> None:
    """Find the images of the index that best match QUERY."""
    if not query.strip():
        raise DiscffError("The query is empty; give the text to search for, e.g. discff search \"a red cube\".")
    config = pop_engine_config(engine)
    with library_errors():
        results, model = run_search(query, index_dir, top, rerank, clip, model, deltas, config, progress=not as_json)
    if as_json:
        print_json({"query": query, "results": results})
        return
    rows = [(r["rank"], "-" if r["rerank_score"] is None else f"{r['rerank_score']:.5f}", f"{r['clip_score']:.4f}",
             r["path"]) for r in results]
    title = f"\"{query}\"" + (f" — top {rerank} reranked with Discffusion ({model})" if rerank else "")
    print_table(title, ["rank", "rerank score", "CLIP score", "path"], rows, ["right", "right", "right", "left"])


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

    def scorer(self):
        if self._scorer is None:
            from discff_cli.engine.scorer import load_scorer

            self._scorer = load_scorer(self.model, self.config, self.deltas)
        return self._scorer

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
