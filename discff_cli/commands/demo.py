"""`discff demo [DIR]`: the whole pipeline, offline, on the bundled demo world and demo models.

Writes a gallery of world images, indexes it with the demo OpenCLIP model, then runs a few
two-object searches with `--rerank`, showing where the image the query was written for lands
before and after Discffusion reranking.
"""

from __future__ import annotations

import random
from pathlib import Path

import click

from discff_cli.options import engine_options, pop_engine_config
from discff_cli.render import print_table


def write_gallery(directory: Path, count: int, seed: int) -> list[tuple[str, str]]:
    """Save `count` test-split scenes as PNGs; returns (relative path, one true caption) per image."""
    from training.world import make_split

    directory.mkdir(parents=True, exist_ok=True)
    gallery = []
    for i, example in enumerate(make_split("test", count, seed=seed)):
        rel = f"scene-{i:04d}.png"
        if not (directory / rel).exists():
            example.image.save(directory / rel)
        gallery.append((rel, example.caption))
    return gallery


def pick_queries(gallery: list[tuple[str, str]], count: int, seed: int) -> list[tuple[str, str]]:
    """Two-object captions (the compositional case CLIP finds hard), each with the image it describes."""
    relational = [(rel, cap) for rel, cap in gallery if any(w in cap for w in (" left ", " right ", " above ",
                                                                              " below ", " under ", " over "))]
    return random.Random(seed).sample(relational, min(count, len(relational)))


def target_ranks(results: list[dict], target: str) -> tuple[int | None, int | None]:
    """Rank of the target image by CLIP score and after reranking (None when not shortlisted)."""
    by_clip = sorted(results, key=lambda r: -r["clip_score"])
    clip_rank = next((i + 1 for i, r in enumerate(by_clip) if r["path"].endswith(target)), None)
    final_rank = next((r["rank"] for r in results if r["path"].endswith(target)), None)
    return clip_rank, final_rank


def _write_gallery_checked(root: Path, images: int, seed: int) -> list[tuple[str, str]]:
    """write_gallery with an unwritable or full destination as one sentence (checked before any image)."""
    from discff_cli.errors import DiscffError
    from index.fs import WriteFailed, check_writable, write_failure

    try:
        check_writable(root / "images")
        return write_gallery(root / "images", images, seed)
    except WriteFailed as exc:
        raise DiscffError(str(exc)) from None
    except OSError as exc:
        raise DiscffError(str(write_failure(exc, root / "images"))) from None


@click.command()
@click.argument("directory", default="discff-demo", type=click.Path(file_okay=False))
@click.option("--images", type=click.IntRange(min=10), default=300, show_default=True, help="Gallery size.")
@click.option("--queries", type=click.IntRange(min=1), default=3, show_default=True, help="Searches to run.")
@click.option("--rerank", type=click.IntRange(min=1), default=10, show_default=True,
              help="Shortlist size re-scored with Discffusion.")
@engine_options(model_default="demo")
def demo(directory: str, images: int, queries: int, rerank: int, model: str, **engine: object) -> None:
    """Write a demo gallery to DIRECTORY, index it, and search it with reranking."""
    from discff_cli.cli import app
    from discff_cli.pipeline import Searcher

    config = pop_engine_config(engine)
    root = Path(directory)
    gallery = _write_gallery_checked(root, images, config.seed)
    click.echo(f"wrote {len(gallery)} demo-world images to {root / 'images'}", err=True)
    index_dir = str(root / ".discff")
    app.main(["index", "build", str(root / "images"), "--index", index_dir, "--clip", "demo", "--model", model,
              "--device", config.device], standalone_mode=False)
    searcher = Searcher(index_dir, None, model, None, config)  # models loaded once for every query
    for target, query in pick_queries(gallery, queries, config.seed):
        results = searcher.search(query, rerank, rerank, progress=True)
        clip_rank, final_rank = target_ranks(results, target)
        rows = [(r["rank"], f"{r['rerank_score']:.4f}", f"{r['clip_score']:.4f}",
                 r["path"] + ("  <- written for this query" if r["path"].endswith(target) else ""))
                for r in results]
        print_table(f"\"{query}\"", ["rank", "rerank score", "CLIP score", "path"], rows,
                    ["right", "right", "right", "left"])
        click.echo(f"  target {target}: CLIP rank {clip_rank or f'>{rerank}'}, "
                   f"after rerank {final_rank or f'>{rerank}'}\n")
