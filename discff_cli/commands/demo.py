"""`discff demo [DIR]`: the whole pipeline, offline, on the bundled demo world and demo models.

Writes a gallery of world test scenes, indexes it with the demo OpenCLIP model, then measures
whether reranking beats CLIP on it: two-object and single-object queries, R@1, R@5 and the rank
of the first true match for CLIP alone and after reranking with each score, each compared with
CLIP on the same queries (discff_cli/evaluation/gallery.py). With the demo model it also reranks
the same shortlists under the shipped tuned deltas (`discff tune` on 5% of the world's train split,
training/demo_models/tune_demo_deltas.py) and reports that "tuned" row beside the zero-shot ones.
It says plainly when reranking does not help.

The grid defaults to 5 DDIM steps x level 0.5 (not search's 10 x 4) so that 60 queries x 20
candidates run in a few minutes on two CPU cores.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
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
@click.option("--deltas", type=click.Path(dir_okay=False), default=None,
              help="Deltas from `discff tune` for the tuned rows (default with --model demo: the shipped ones, "
                   "tuned on 5% of the demo world's train split).")
@click.option("--tuned/--no-tuned", default=True, show_default=True,
              help="Also rerank with tuned deltas and report them beside zero-shot.")
@fusion_options
@engine_options(model_default="demo", grid_defaults=DEMO_GRID)
@json_option
def demo(directory: str, images: int, queries: int, rerank: int, deltas: str | None, tuned: bool, fusion: str,
         fusion_weight: float, model: str, as_json: bool, **engine: object) -> None:
    """Write a demo gallery to DIRECTORY, index it, and measure reranking against CLIP on it."""
    from discff_cli.errors import DiscffError

    if deltas and not tuned:
        raise DiscffError("--deltas names the tuned rows' deltas and --no-tuned drops those rows; give one of them.")
    report = run_demo(Path(directory), images, queries, rerank, fusion, fusion_weight, model,
                      pop_engine_config(engine), progress=not as_json, deltas=tuned_deltas(model, deltas, tuned))
    if as_json:
        print_json(report)
        return
    render_report(report)


def tuned_deltas(model: str, deltas: str | None, tuned: bool) -> str | None:
    """The deltas of the tuned rows: --deltas, else the shipped demo deltas when the model is the demo's."""
    from discff_cli.engine.models import DEMO_TUNED_DELTAS

    if not tuned:
        return None
    if deltas:
        return deltas
    if model == "demo" and DEMO_TUNED_DELTAS.is_file():
        return str(DEMO_TUNED_DELTAS)
    click.echo(f"note: no tuned rows: the shipped deltas fit --model demo only; give --deltas FILE for '{model}'.",
               err=True)
    return None


def run_demo(root: Path, images: int, per_kind: int, rerank: int, fusion: str, weight: float, model: str, config,
             progress: bool, deltas: str | None = None) -> dict:
    from discff_cli.evaluation import gallery as ge
    from discff_cli.cli import app
    from discff_cli.render.progress import progress_bar
    from discff_cli.search.pipeline import Fusion, Searcher

    gallery = _write_gallery_checked(root, images, config.seed)
    click.echo(f"wrote {len(gallery)} demo-world images to {root / 'images'}", err=True)
    index_dir = str(root / ".discff")
    with contextlib.redirect_stdout(sys.stderr):  # the build's summary is progress here; stdout carries the report
        app.main(["index", "build", str(root / "images"), "--index", index_dir, "--clip", "demo", "--model", model,
                  "--device", config.device], standalone_mode=False)
    chosen = ge.pick_queries([caps for caps, _ in gallery.values()], [n for _, n in gallery.values()], per_kind,
                             config.seed)
    truth = ge.scene_truth({p: caps for p, (caps, _) in gallery.items()})
    tuned_score = deltas_score(deltas) if deltas else None
    with progress_bar("queries", len(chosen) * (2 if deltas else 1), progress) as advance:
        searcher = Searcher(index_dir, None, model, None, config, Fusion(fusion, weight))  # models loaded once
        records = ge.measure(searcher, chosen, truth, rerank, SCORES, advance)
        if deltas:  # the same queries and shortlists, reranked under the tuned deltas
            tuned = Searcher(index_dir, None, model, deltas, replace(config, score=tuned_score), Fusion(fusion, weight))
            records = ge.with_tuned(records, ge.measure(tuned, chosen, truth, rerank, (tuned_score,), advance),
                                    tuned_score)
    rows = ge.summarise(ge.rank_systems(records, fusion, weight))
    example = next(q.text for q in chosen if q.kind == "two-object")
    verdicts = [ge.verdict(rows, config.score)] + ([ge.verdict(rows, ge.TUNED % tuned_score)] if deltas else [])
    try_search = f'discff search "{example}" --index {index_dir} --rerank {rerank}'
    return {"gallery": len(gallery), "index": index_dir, "rerank": rerank, "score": config.score,
            "tuned": {"deltas": deltas, "score": tuned_score, "system": ge.TUNED % tuned_score} if deltas else None,
            "fusion": {"method": fusion, "weight": weight}, "engine": config.to_dict(),
            "prune": config.prune, "unet_passes": sum(r.unet_passes for r in records), "rows": rows,
            "verdict": "\n".join(verdicts), "fusion_sweep": ge.fusion_sweep(records),
            "try": try_search + (f" --deltas {deltas}" if deltas else "")}


def deltas_score(path: str) -> str:
    """The score family a deltas file was tuned for (its tuned rows use that score)."""
    from discff_cli.engine.deltas import read_deltas_file

    return read_deltas_file(path)[1].get("score") or "discffusion"


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

