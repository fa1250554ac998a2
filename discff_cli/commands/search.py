"""`discff search QUERY [--rerank N]`: CLIP/FAISS shortlist, optionally reranked with Discffusion."""

from __future__ import annotations

import click

from discff_cli.clip_resolve import library_errors
from discff_cli.commands.index_cmd import index_option
from discff_cli.errors import DiscffError
from discff_cli.options import deltas_option, engine_options, fusion_options, json_option, pop_engine_config
from discff_cli.pipeline import Fusion, Searcher, run_search, search_document
from discff_cli.query_file import read_queries
from discff_cli.render import print_json, print_json_line, print_table


@click.command()
@click.argument("query", required=False)
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False), default=None,
              help="Run every query of this file (one per line, or JSON Lines {\"query\", \"top\", \"rerank\", "
                   "\"score\"}) with the models loaded once; --json prints one JSON document per line.")
@index_option
@click.option("--top", "top", type=click.IntRange(min=1), default=None,
              help="Results to show (default 10, or N with --rerank N).")
@click.option("--rerank", type=click.IntRange(min=0), default=None,
              help="Re-score the top N of the shortlist with Discffusion (0 = no reranking).")
@fusion_options
@click.option("--clip", default=None,
              help="CLIP to encode the query; must be the one the index was built with (default: the index's).")
@engine_options(model_default=None)
@deltas_option
@json_option
def search(query: str | None, queries_file: str | None, index_dir: str, top: int | None, rerank: int | None,
           fusion: str, fusion_weight: float, clip: str | None, model: str | None, deltas: str | None, as_json: bool,
           **engine: object) -> None:
    """Find the images of the index that best match QUERY (or each query of --queries FILE)."""
    if queries_file is not None:
        if query is not None:
            raise DiscffError("Give either a QUERY or --queries FILE, not both.")
        queries = read_queries(queries_file)
    elif query is None:
        raise DiscffError("Give the text to search for, e.g. discff search \"a red cube\", or --queries FILE.")
    if query is not None and not query.strip():
        raise DiscffError("The query is empty; give the text to search for, e.g. discff search \"a red cube\".")
    config = pop_engine_config(engine)
    if deltas:
        from discff_cli.engine.deltas import model_for_deltas

        model = model_for_deltas(model, deltas, given=model is not None)
    if queries_file is not None:
        with library_errors():
            searcher = Searcher(index_dir, clip, model, deltas, config, Fusion(fusion, fusion_weight))
            for q in queries:
                doc = search_document(searcher, q.text, q.top or top, rerank if q.rerank is None else q.rerank,
                                      progress=not as_json, score=q.score)
                if as_json:
                    print_json_line(doc)
                else:
                    render_results(q.text, doc["results"], doc)
        return
    with library_errors():
        results, provenance = run_search(query, index_dir, top, rerank, clip, model, deltas, config,
                                         progress=not as_json, fusion=Fusion(fusion, fusion_weight))
    if as_json:
        print_json({"query": query, **provenance, "results": results})
        return
    render_results(query, results, provenance)


def render_results(query: str, results: list[dict], provenance: dict) -> None:
    """The results table; the rerank columns only when something was reranked."""
    reranked = [r for r in results if r["rerank_score"] is not None]
    if not reranked:
        rows = [(r["rank"], f"{r['clip_score']:.4f}", r["path"]) for r in results]
        print_table(f"\"{query}\"", ["rank", "CLIP score", "path"], rows, ["right", "right", "left"])
        return
    rows = [(r["rank"], r["clip_rank"], "-" if r["rerank_score"] is None else f"{r['rerank_score']:.5f}",
             f"{r['clip_score']:.4f}", r["path"]) for r in results]
    fusion = provenance["fusion"]
    how = "alone" if fusion["method"] == "none" else f"fused with CLIP ({fusion['method']}, weight {fusion['weight']})"
    title = (f"\"{query}\" — top {len(reranked)} reranked with the {provenance['score']} score of "
             f"{provenance['model']}, {how}")
    print_table(title, ["rank", "CLIP rank", f"{provenance['score']} score", "CLIP score", "path"], rows,
                ["right", "right", "right", "right", "left"])
