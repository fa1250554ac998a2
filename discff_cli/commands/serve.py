"""`discff serve`: the search service and its web page, with the models loaded once."""

from __future__ import annotations

import click

from discff_cli.commands.index_cmd import index_option
from discff_cli.errors import DiscffError
from discff_cli.options import deltas_option, engine_options, fusion_options, pop_engine_config

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@click.command()
@index_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the index to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--token", envvar="DISCFF_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on every route but /healthz [env DISCFF_TOKEN].")
@click.option("--clip", default=None, help="CLIP to encode queries (default: the index's).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Seconds a search may take, queueing included, before it is answered 504.")
@click.option("--queue", "max_queue", type=click.IntRange(min=1), default=32, show_default=True,
              help="Searches that may wait for the model; more are answered 503 with Retry-After.")
@click.option("--max-rerank", type=click.IntRange(min=1), default=100, show_default=True,
              help="Largest rerank depth a request may ask for.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads for reranking (0: torch's default).")
@click.option("--shortlist-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for a shortlist-only query (0: as for reranks); one query is too small to split.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Server log level (info logs every request).")
@fusion_options
@engine_options(model_default=None)
@deltas_option
def serve(index_dir: str, host: str, port: int, token: str | None, clip: str | None, timeout_s: float,
          max_queue: int, max_rerank: int, threads: int, shortlist_threads: int, log_level: str, fusion: str,
          fusion_weight: float, model: str | None, deltas: str | None, **engine: object) -> None:
    """Serve search over HTTP (GET /search, /explain, /images/ID, /thumbs/ID, /info) and a web page at /.

    --score and --fusion are the defaults; a request (and the page) may pick others."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise DiscffError("`discff serve` needs the serve extra; install it with: pip install -e '.[serve]'") from None
    from discff_cli.clip_resolve import library_errors
    from discff_cli.service.app import ServeSettings, create_app
    from discff_cli.service.queries import TimedSearcher
    from discff_cli.service.worker import ModelWorker

    config = pop_engine_config(engine)
    if host not in LOCAL_HOSTS:
        click.echo(f"warning: binding {host} makes the index and its images reachable from other machines"
                   + ("" if token else "; set --token (or DISCFF_TOKEN) to require a bearer token"), err=True)
    from discff_cli.search.pipeline import Fusion

    worker = ModelWorker(lambda: TimedSearcher(index_dir, clip, model, deltas, config, Fusion(fusion, fusion_weight)),
                         max_queue)
    with library_errors():
        worker.start()  # index and CLIP load here, so a bad index is one sentence before the server starts
    settings = ServeSettings(index_dir, token, timeout_s, max_rerank=max_rerank, threads=threads or None,
                             shortlist_threads=shortlist_threads or threads or None)
    searcher = worker.models
    shown = "localhost" if host in LOCAL_HOSTS else host
    click.echo(f"discff serve: {searcher.index.manifest['count']:,} images, reranker {searcher.model or 'none'} "
               f"(loaded on the first rerank); open http://{shown}:{port}/" + ("?token=…" if token else ""), err=True)
    try:
        uvicorn.run(create_app(worker, settings), host=host, port=port, log_level=log_level)
    finally:
        worker.stop()
