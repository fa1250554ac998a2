"""`discff search QUERY [--rerank N]`: CLIP/FAISS shortlist, optionally reranked with Discffusion."""

from __future__ import annotations

import click

from discff_cli.clip_resolve import library_errors
from discff_cli.commands.index_cmd import index_option
from discff_cli.errors import DiscffError
from discff_cli.options import deltas_option, engine_options, json_option, pop_engine_config
from discff_cli.pipeline import run_search
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
    if deltas:
        from training.deltas import model_for_deltas

        model = model_for_deltas(model, deltas, given=model is not None)
    with library_errors():
        results, model = run_search(query, index_dir, top, rerank, clip, model, deltas, config, progress=not as_json)
    if as_json:
        print_json({"query": query, "results": results})
        return
    rows = [(r["rank"], "-" if r["rerank_score"] is None else f"{r['rerank_score']:.5f}", f"{r['clip_score']:.4f}",
             r["path"]) for r in results]
    title = f"\"{query}\"" + (f" — top {rerank} reranked with Discffusion ({model})" if rerank else "")
    print_table(title, ["rank", "rerank score", "CLIP score", "path"], rows, ["right", "right", "right", "left"])
