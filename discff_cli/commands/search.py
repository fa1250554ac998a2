"""`discff search QUERY [--rerank N]`: CLIP/FAISS shortlist, optionally reranked with Discffusion."""

from __future__ import annotations

from typing import Iterator

import click

from discff_cli.clip_resolve import library_errors
from discff_cli.commands.index_cmd import index_option
from discff_cli.errors import DiscffError
from discff_cli.options import (deltas_option, engine_options, fusion_options, json_option, pop_engine_config,
                                ray_option)
from discff_cli.api import open_index
from discff_cli.search.pipeline import Fusion, RayOptions, query_documents
from discff_cli.search.request import CLI, search_request
from discff_cli.search.query_file import read_queries
from discff_cli.render.output import format_score, print_json, print_json_line, print_table
from discff_cli.render.progress import progress_bar


@click.command()
@click.argument("query", required=False)
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False), default=None,
              help="Run every query of this file (one per line, or JSON Lines {\"query\", \"top\", \"rerank\", "
                   "\"score\"}) with the models loaded once; --json prints one JSON document per line.")
@index_option
@click.option("--top", "top", type=int, default=None,
              help="Results to show (default 10, or N with --rerank N).")
@click.option("--rerank", type=int, default=None,
              help="Re-score the top N of the shortlist with Discffusion (0 = no reranking).")
@fusion_options
@click.option("--clip", default=None,
              help="CLIP to encode the query; must be the one the index was built with (default: the index's).")
@engine_options(model_default=None)
@deltas_option
@ray_option("With --queries, rerank", "rerank actors, each loading the diffusion model once")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --ray: the number of rerank actors.")
@json_option
def search(query: str | None, queries_file: str | None, index_dir: str, top: int | None, rerank: int | None,
           fusion: str, fusion_weight: float, clip: str | None, model: str | None, deltas: str | None,
           ray_address: str | None, workers: int | None, as_json: bool, **engine: object) -> None:
    """Find the images of the index that best match QUERY (or each query of --queries FILE)."""
    try:
        run(query, queries_file, index_dir, top, rerank, Fusion(fusion, fusion_weight), clip, model, deltas,
            ray_address, workers, as_json, engine)
    except KeyboardInterrupt:
        raise DiscffError("Interrupted; nothing was written, run the same command again to search"
                          + (" (the documents printed so far are complete)." if queries_file else "."),
                          exit_code=130) from None


def run(query: str | None, queries_file: str | None, index_dir: str, top: int | None, rerank: int | None,
        fusion: Fusion, clip: str | None, model: str | None, deltas: str | None, ray_address: str | None,
        workers: int | None, as_json: bool, engine: dict) -> None:
    """Check the arguments (the request's through `search_request`, as every front end does), search, print."""
    if queries_file is not None and query is not None:
        raise DiscffError("Give either a QUERY or --queries FILE, not both.")
    if ray_address is not None and queries_file is None:
        raise DiscffError("--ray spreads the reranking of many queries; use it with --queries FILE.")
    if workers is not None and ray_address is None:
        raise DiscffError("--workers is the number of Ray rerank actors; use it with --ray.")
    if queries_file is not None:
        requests = [line.over(search_request({"query": line.query, "top": top, "rerank": rerank}, spelling=CLI))
                    for line in read_queries(queries_file)]  # a line's own fields over the command line's
    elif query is None:
        raise DiscffError("Give the text to search for, e.g. discff search \"a red cube\", or --queries FILE.")
    else:
        requests = [search_request({"query": query, "top": top, "rerank": rerank}, spelling=CLI)]
    config = pop_engine_config(engine)
    ray = None if ray_address is None else RayOptions(ray_address, workers)
    with library_errors():
        searcher = open_index(index_dir, model, clip, deltas, fusion, config)  # --deltas picks the model there
        docs = query_documents(searcher, requests, progress=not as_json and ray is None, ray=ray)
        if queries_file is None:
            doc = next(docs)
            print_json(doc) if as_json else render_results(doc["query"], doc["results"], doc)
            return
        for doc in counted(docs, len(requests), enabled=ray is not None and not as_json):
            if as_json:
                print_json_line(doc)
            else:
                render_results(doc["query"], doc["results"], doc)


def counted(docs: Iterator[dict], total: int, enabled: bool) -> Iterator[dict]:
    """`docs`, with a bar on stderr counting finished queries (the Ray actors show none of their own)."""
    with progress_bar("queries", total, enabled, elapsed=True, remaining=False) as bar:
        for doc in docs:
            yield doc
            bar.advance()


def render_results(query: str, results: list[dict], provenance: dict) -> None:
    """The results table (in a narrow terminal captions wrap or give way first, then paths)."""
    title, columns, rows, justify = results_table(query, results, provenance)
    print_table(title, columns, rows, justify, shrink=len(columns) - 1,
                wrap=len(columns) - 2 if columns[-2] == "caption" else None)


def results_table(query: str, results: list[dict], provenance: dict) -> tuple[str, list[str], list[tuple], list[str]]:
    """(title, columns, rows, justify); the rerank columns (fused score, rerank score) only when something
    was reranked, and the title then says which score and fusion ordered the rows; the stored
    caption (before the path) only when a row has one."""
    title, columns, rows, justify = _score_table(query, results, provenance)
    if any(r.get("caption") for r in results):
        columns = columns[:-1] + ["caption", columns[-1]]
        rows = [row[:-1] + (" ".join((r.get("caption") or "").split()), row[-1]) for row, r in zip(rows, results)]
        justify = justify[:-1] + ["left", justify[-1]]
    return title, columns, rows, justify


def _score_table(query: str, results: list[dict], provenance: dict) -> tuple[str, list[str], list[tuple], list[str]]:
    reranked = [r for r in results if r["rerank_score"] is not None]
    if not reranked:
        rows = [(r["rank"], format_score(r["clip_score"]), r["path"]) for r in results]
        return f"\"{query}\"", ["rank", "CLIP score", "path"], rows, ["right", "right", "left"]
    rows = [(r["rank"], r["clip_rank"], format_score(r.get("fused_score")) or "-",
             format_score(r["rerank_score"]) or "-", format_score(r["clip_score"]), r["path"]) for r in results]
    fusion = provenance["fusion"]
    how = "rerank score alone" if fusion["method"] == "none" else \
        f"fused with CLIP: {fusion['method']}, weight {fusion['weight']:g}"
    title = (f"\"{query}\" -- top {len(reranked)} reranked by {provenance['score']} ({provenance['model']}), "
             f"ordered by {how}")
    return (title, ["rank", "CLIP rank", "fused", provenance["score"], "CLIP", "path"], rows,
            ["right", "right", "right", "right", "right", "left"])
