"""`discff demo [DIR]`: the whole pipeline, offline, on the bundled demo world and demo models.

Writes a gallery of world test scenes, indexes it with the demo OpenCLIP model, then measures
whether reranking beats CLIP on it: two-object and single-object queries, R@1, R@5 and the rank
of the first true match for CLIP alone and after reranking with each score, each compared with
CLIP on the same queries (discff_cli/evaluation/gallery.py). It says plainly when reranking does not help.

The grid defaults to 5 DDIM steps x level 0.5 (not search's 10 x 4) so that 60 queries x 20
candidates run in a few minutes on two CPU cores.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from discff_cli.engine.config import SCORES
from discff_cli.options import engine_options, fusion_options, json_option, pop_engine_config
from discff_cli.render.output import print_json, print_table

DEMO_GRID = {"steps": 5, "levels": "0.5"}


def write_gallery(directory: Path, count: int, seed: int) -> dict[str, tuple[list[str], int]]:
    """Save `count` test-split scenes as PNGs, each with its caption beside it (scene-0001.txt, which
    `discff serve` shows on hover); returns (every true caption, number of objects) by file path."""
    from training.world import captions, make_split

    directory.mkdir(parents=True, exist_ok=True)
    gallery = {}
    for i, example in enumerate(make_split("test", count, seed=seed)):
        path = directory / f"scene-{i:04d}.png"
        if not path.exists():
            example.image.save(path)
            path.with_suffix(".txt").write_text(example.caption + "\n")  # the caption `serve` shows on hover
        gallery[str(path)] = (captions(example.scene), len(example.scene.objects))
    return gallery


def _write_gallery_checked(root: Path, images: int, seed: int) -> dict[str, tuple[list[str], int]]:
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
@click.option("--queries", type=click.IntRange(min=1), default=30, show_default=True,
              help="Queries of each kind (two-object, single-object).")
@click.option("--rerank", type=click.IntRange(min=1), default=20, show_default=True,
              help="Shortlist size re-scored with Discffusion.")
@fusion_options
@engine_options(model_default="demo", grid_defaults=DEMO_GRID)
@json_option
def demo(directory: str, images: int, queries: int, rerank: int, fusion: str, fusion_weight: float, model: str,
         as_json: bool, **engine: object) -> None:
    """Write a demo gallery to DIRECTORY, index it, and measure reranking against CLIP on it."""
    report = run_demo(Path(directory), images, queries, rerank, fusion, fusion_weight, model,
                      pop_engine_config(engine), progress=not as_json)
    if as_json:
        print_json(report)
        return
    render_report(report)


def run_demo(root: Path, images: int, per_kind: int, rerank: int, fusion: str, weight: float, model: str, config,
             progress: bool) -> dict:
    from discff_cli.evaluation import gallery as ge
    from discff_cli.cli import app
    from discff_cli.evaluation.evaluate import ProgressBar
    from discff_cli.search.pipeline import Fusion, Searcher

    gallery = _write_gallery_checked(root, images, config.seed)
    click.echo(f"wrote {len(gallery)} demo-world images to {root / 'images'}", err=True)
    index_dir = str(root / ".discff")
    with contextlib.redirect_stdout(sys.stderr):  # the build's summary is progress here; stdout carries the report
        app.main(["index", "build", str(root / "images"), "--index", index_dir, "--clip", "demo", "--model", model,
                  "--device", config.device], standalone_mode=False)
    chosen = ge.pick_queries([caps for caps, _ in gallery.values()], [n for _, n in gallery.values()], per_kind,
                             config.seed)
    searcher = Searcher(index_dir, None, model, None, config, Fusion(fusion, weight))  # models loaded once
    with ProgressBar("queries", len(chosen), progress) as advance:
        records = ge.measure(searcher, chosen, ge.scene_truth({p: caps for p, (caps, _) in gallery.items()}),
                             rerank, SCORES, advance)
    rows = ge.summarise(ge.rank_systems(records, fusion, weight))
    example = next(q.text for q in chosen if q.kind == "two-object")
    return {"gallery": len(gallery), "index": index_dir, "rerank": rerank, "score": config.score,
            "fusion": {"method": fusion, "weight": weight}, "engine": config.to_dict(),
            "prune": config.prune, "unet_passes": sum(r.unet_passes for r in records), "rows": rows,
            "verdict": ge.verdict(rows, config.score), "fusion_sweep": ge.fusion_sweep(records),
            "try": f'discff search "{example}" --index {index_dir} --rerank {rerank}'}


def render_report(report: dict) -> None:
    """Two tables that fit 80 columns (recall with intervals; mean rank and the change against CLIP),
    then the verdict and a search to try."""
    for title, columns, rows in report_tables(report):
        print_table(title, columns, rows, ["left", "left"] + ["right"] * (len(columns) - 2))
    click.echo(report["verdict"])
    how = "each score pruned by successive halving over one memo of passes" if report["prune"] \
        else "every score read from the same passes"
    click.echo(f"({report['unet_passes']} U-Net passes; {how})")
    click.echo(f"\nSearch this index yourself:\n  {report['try']}")


def report_tables(report: dict) -> list[tuple[str, list[str], list[tuple]]]:
    """(title, columns, rows) of the demo's two tables; systems named short, with a legend in the title."""
    def cell(fig: dict) -> str:
        return f"{fig['value']:.2f} ({fig['ci95'][0]:.2f}-{fig['ci95'][1]:.2f})"

    def system(name: str) -> str:
        return "CLIP alone" if name == "clip" else f"+{name}" + ("*" if name == report["score"] else "")

    fusion = report["fusion"]
    recall = [(r["queries"], system(r["system"]), r["n"], cell(r["R@1"]), cell(r["R@5"])) for r in report["rows"]]
    change = [(r["queries"], system(r["system"]), f"{r['mean_rank']:.2f}", _versus(r.get("vs_clip_R@1")))
              for r in report["rows"]]
    legend = (f"{report['gallery']} demo images; +score = CLIP's top {report['rerank']} reranked by that score, fused "
              f"with CLIP ({fusion['method']}, weight {fusion['weight']:g}); * = default")
    return [(legend, ["queries", "system", "n", "R@1 (95% CI)", "R@5 (95% CI)"], recall),
            ("mean rank of the first right image, and R@1 against CLIP alone (exact McNemar p)",
             ["queries", "system", "mean rank", "R@1 vs CLIP"], change)]


def _versus(change: dict | None) -> str:
    return "" if change is None else f"+{change['gained']} -{change['lost']} p={change['p_value']:.2g}"

