"""`discff index build DIR` and `discff index info`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from discff_cli.clip_resolve import DEFAULT_CLIP, library_errors, load_clip_cli, manifest_spec
from discff_cli.engine.config import DEFAULT_MODEL
from discff_cli.errors import DiscffError
from discff_cli.options import check_device, json_option, ray_option
from discff_cli.render.output import print_json, print_table, stderr_console
from discff_cli.render.progress import progress_bar

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf_flat", "ivf_pq")
SD_DEFAULT = DEFAULT_MODEL  # engine/config.py: SD 2.1-base as mirrored by sd2-community


def index_option(f):
    """--index DIR [env DISCFF_INDEX], shared with `search`."""
    return click.option("--index", "index_dir", envvar="DISCFF_INDEX", default=".discff", show_default=True,
                        type=click.Path(file_okay=False), help="Index directory [env DISCFF_INDEX].")(f)


@click.group()
def index() -> None:
    """Build and inspect the OpenCLIP/FAISS index."""


def _memory(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from index.faiss_index import parse_memory

    try:
        return parse_memory(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@index.command()
@click.argument("source", metavar="SOURCE")
@index_option
@click.option("--clip", envvar="DISCFF_CLIP", default=None,
              help="OpenCLIP: NAME/PRETRAINED, a local directory or checkpoint, or 'demo' [env DISCFF_CLIP] "
                   f"(default: the one the index records, else {DEFAULT_CLIP}).")
@click.option("--model", envvar="DISCFF_MODEL", default=None,
              help="Stable Diffusion model recorded for `search --rerank` (default: 'demo' with --clip demo, "
                   f"else {SD_DEFAULT}) [env DISCFF_MODEL].")
@click.option("--device", default="auto", show_default=True, callback=check_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per batch.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Decoding worker processes (default: up to 4 when there is enough work).")
@click.option("--max-memory", default="8G", show_default=True, callback=_memory,
              help="Memory budget of the FAISS index; picks the index type.")
@click.option("--index-type", type=click.Choice(INDEX_TYPES), default="auto", show_default=True,
              help="Force a FAISS index type instead of choosing from size and memory.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Images larger than this are skipped as decompression bombs (default 100M).")
@click.option("--rebuild", is_flag=True, help="Ignore the existing index and embed everything again.")
@click.option("--full-decode", is_flag=True,
              help="Decode JPEGs at full size before the resize (default: at the 1/2-1/8 DCT scale the "
                   "model needs, several times faster).")
@click.option("--image-column", default=None,
              help="Parquet files: the column of image bytes (default: detected, e.g. 'image' as HF datasets "
                   "writes it, 'jpg' as img2dataset does).")
@click.option("--caption-column", default=None,
              help="Parquet files: the caption column (default: detected, e.g. 'caption' or 'text').")
@click.option("--latents", is_flag=True,
              help="Also store each image's VAE latent (float16) so `search --rerank` skips the VAE.")
@ray_option("Decode and embed", "embedding actors")
@json_option
def build(source: str, index_dir: str, clip: str | None, model: str | None, device: str, batch_size: int,
          workers: int | None, max_memory: int, index_type: str, max_pixels: int | None, rebuild: bool,
          full_decode: bool, image_column: str | None, caption_column: str | None, latents: bool,
          ray_address: str | None, as_json: bool) -> None:
    """Embed every image of SOURCE into the index; only new or changed images are embedded.

    SOURCE is a folder (searched recursively; .tar shards and .parquet files in it are read in place), or
    webdataset tar shards or parquet files: one file, a brace pattern such as 'shards/{00000..00099}.tar',
    a glob such as 'data/*.parquet', or a list file of them.
    """
    from index.builder import BuildOptions, build_index
    from index.errors import IndexError_
    from index.imageio import DEFAULT_MAX_PIXELS
    from index.sources import resolve_source

    try:
        collection = resolve_source(source)
    except IndexError_ as exc:
        raise DiscffError(str(exc)) from None
    existing = None if rebuild else _existing_manifest(index_dir)
    if clip is None:  # an update uses the CLIP the index was built with, as search does
        clip = existing["clip"]["spec"] if existing else DEFAULT_CLIP
    if model is None and existing is None:
        model = "demo" if clip == "demo" else SD_DEFAULT
    console = stderr_console()
    with library_errors():
        from index.fs import check_writable

        check_writable(index_dir)  # a read-only or full destination is refused before any model loads
        clip_model = load_clip_cli(clip, device)
        opts = BuildOptions(root=collection.root, shards=collection.shards, source=collection.source,
                            index_dir=Path(index_dir), clip_spec=manifest_spec(clip), dct=not full_decode,
                            model=model, batch_size=batch_size, workers=workers, max_memory=max_memory,
                            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                            index_type=None if index_type == "auto" else index_type, rebuild=rebuild,
                            image_column=image_column, caption_column=caption_column,
                            fail_after_batches=_fail_hook(), embedder=_ray_embedder(ray_address, workers, clip, clip_model, device))
        with _Progress(console, quiet=as_json) as events:
            try:
                summary = build_index(opts, clip_model, events)
            except KeyboardInterrupt:
                raise DiscffError("Interrupted; the batches embedded so far are kept, run the same command "
                                  "again to resume.", exit_code=130) from None
    _report(summary, index_dir, as_json, console)
    if latents:
        _store_latents(index_dir, device, console, quiet=as_json)


def _ray_embedder(address: str | None, workers: int | None, clip: str, clip_model, device: str):
    """The builder's Ray embedding hook for --ray (None: embed in this process)."""
    if address is None:
        return None
    from discff_cli.clip_resolve import resolve_clip
    from index.ray_embed import RayEmbedder

    return RayEmbedder(address, workers, str(resolve_clip(clip)), clip_model.preprocess, device)


def _store_latents(index_dir: str, device: str, console, quiet: bool) -> None:
    """Encode every indexed image with the index's reranking model (incremental, like the build)."""
    import time

    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.latent_store import update_latent_store
    from discff_cli.engine.scorer import load_scorer
    from index.search import SearchIndex
    from index.store import writer_lock

    with library_errors():
        index = SearchIndex(index_dir)
    paths = [index.root / rel for rel in index.rel_by_row]
    scorer = load_scorer(index.manifest["model"], EngineConfig(device=device))
    start = time.perf_counter()
    with library_errors(), writer_lock(Path(index_dir)), \
            progress_bar("VAE latents", len(paths), not quiet, remaining=False, console=console) as bar:
        counts = update_latent_store(index_dir, scorer, paths, bar.advance)
    click.echo(f"latents: encoded {counts['encoded']}, reused {counts['reused']}, dropped {counts['dropped']} "
               f"in {time.perf_counter() - start:.1f}s", err=True)


def _existing_manifest(index_dir: str) -> dict | None:
    """The manifest the build will update; None when there is none or it is damaged (the build repairs it)."""
    from index.errors import IndexDamaged
    from index.store import IndexDir

    store = IndexDir(index_dir)
    if not store.exists():
        return None
    with library_errors():
        try:
            return store.read_manifest()
        except IndexDamaged:
            return None


def _fail_hook() -> int | None:
    """DISCFF_INDEX_FAIL_AFTER_BATCHES=N simulates a build killed after N batches (used by tests)."""
    value = os.environ.get("DISCFF_INDEX_FAIL_AFTER_BATCHES")
    return int(value) if value else None


class _Progress:
    """The build's bar on stderr (render/progress.py: images/s, elapsed, remaining), driven by its events."""

    def __init__(self, console, quiet: bool) -> None:
        self.console, self.quiet = console, quiet

    def __enter__(self):
        from index.builder import BuildEvents

        self.context = progress_bar("Embedding", None, not self.quiet, rate="images", elapsed=True,
                                    transient=False, console=self.console)
        bar = self.context.__enter__()

        def stage(text: str) -> None:
            if not self.quiet and text != "Embedding":
                self.console.print(f"[dim]{text}…[/dim]")

        return BuildEvents(on_embed_start=bar.start, on_batch=bar.advance, on_stage=stage)

    def __exit__(self, *exc) -> None:
        self.context.__exit__(*exc)


def _report(summary, index_dir: str, as_json: bool, console) -> None:
    if as_json:
        print_json({"index": str(index_dir), **summary.to_dict()})
        return
    for problem in summary.repaired:
        click.echo(f"repaired {problem}", err=True)
    for path, reason in summary.skipped_files:
        click.echo(f"skipped {path}: {reason}", err=True)  # one unwrapped line per file, greppable
    if summary.index_type_note:
        click.echo(f"note: {summary.index_type_note}", err=True)
    for path in summary.safe_names:
        click.echo(f"note {path}: the name is not valid UTF-8; indexed under this spelling", err=True)
    rate = f", {summary.images_per_second:,.1f} images/s" if summary.indexed else ""
    click.echo(f"indexed {summary.indexed}, skipped {summary.skipped}, unchanged {summary.unchanged}, "
               f"renamed {summary.renamed}, duplicates {summary.duplicates}, removed {summary.removed} in {summary.seconds:.1f}s{rate} -> {index_dir} "
               f"({summary.index_type}, recall@10 {summary.recall_at_10:.3f})")


@index.command()
@index_option
@click.option("--errors", "show_errors", is_flag=True, help="Also list the files that could not be read.")
@json_option
def info(index_dir: str, show_errors: bool, as_json: bool) -> None:
    """Show what the index holds: CLIP model, counts, FAISS type and measured recall."""
    from index.store import IndexDir

    store = IndexDir(index_dir)
    with library_errors():
        manifest = store.read_manifest()
        errors = []
        if show_errors or as_json:
            store.verify_items(manifest)  # the table parses and lists every row (else: damaged, one sentence)
            errors = list(store.iter_errors(manifest))
    if as_json:
        print_json({"index": str(Path(index_dir).resolve()), **manifest, "skipped_files": errors})
        return
    faiss = manifest["faiss"]
    params = ", ".join(f"{k}={v}" for k, v in faiss["params"].items()) or "-"
    rows = [
        ("index", str(Path(index_dir).resolve())),
        ("images root", manifest["root"]),
        *([("source", manifest["source"])] if manifest.get("source", manifest["root"]) != manifest["root"] else []),
        ("CLIP", f"{manifest['clip']['spec']} (fingerprint {manifest['clip']['fingerprint'][:12]}, "
                 f"dim {manifest['clip']['dim']})"),
        ("rerank model", manifest.get("model") or "-"),
        ("images indexed", f"{manifest['count']:,}"),
        ("files skipped", f"{manifest['errors']:,}"),
        ("FAISS", f"{faiss['type']} ({params})"),
        ("recall@10", f"{faiss['recall_at_10']:.4f}" + (f" on {faiss['recall_queries']} sample queries"
                                                       if faiss["recall_queries"] else " (exact search)")),
        ("format / generation", f"{manifest['format_version']} / {manifest['generation']}"),
        ("updated", manifest["updated"]),
    ]
    print_table("discff index", ["", ""], rows, ["left", "left"])
    if show_errors:
        for err in errors:
            click.echo(f"skipped {err['path']}: {err['error']}")


@index.command()
@index_option
@json_option
def check(index_dir: str, as_json: bool) -> None:
    """Verify every file of the index against the sizes and checksums its manifest records."""
    from index.check import check_index

    with library_errors():
        report = check_index(Path(index_dir))
    if as_json:
        print_json({"index": str(Path(index_dir).resolve()), **report})
    elif report["problems"]:
        print_table("discff index check: damaged", ["file", "problem"],
                    [(p["file"], p["problem"]) for p in report["problems"]])
    else:
        click.echo(f"{index_dir}: generation {report['generation']}, {report['count']:,} images, all "
                   f"{len(report['files'])} files intact")
    if report["problems"]:
        raise DiscffError(f"The index at '{index_dir}' is damaged ({len(report['problems'])} problem(s)); run "
                          f"`discff index build DIR` on its image folder to repair it.")
