"""`discff explain IMAGE CAPTION`: where in the image the caption helps, per score family and per word."""

from __future__ import annotations

import click

from discff_cli.commands.score import check_image
from discff_cli.commands.notices import warn_if_demo_on_photos
from discff_cli.options import deltas_option, engine_options, json_option, pop_engine_config
from discff_cli.render.output import print_json, print_table


@click.command()
@click.argument("image")
@click.argument("caption")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the maps as a PNG sheet here (default: IMAGE's name + '.explain.png' in the "
                   "current folder).")
@engine_options(model_default=None)
@deltas_option
@json_option
def explain(image: str, caption: str, out: str | None, model: str | None, deltas: str | None, as_json: bool,
            **engine: object) -> None:
    """Map where in IMAGE the CAPTION lowers the U-Net's error (--score's map, summing to the number
    `discff score` prints with the same options) and which image regions each word attends to."""
    from pathlib import Path

    from discff_cli.render.explanation import check_explainable

    config = pop_engine_config(engine)
    check_explainable(config, caption)
    size = check_image(image)
    out = out or f"{Path(image).stem}.explain.png"
    from discff_cli.engine.deltas import model_for_deltas
    from discff_cli.engine.scorer import load_scorer
    from discff_cli.render.explanation import document, explain as explain_pair, figure, save_figure

    from discff_cli.engine.config import DEFAULT_MODEL

    model = model_for_deltas(model, deltas, default=DEFAULT_MODEL)
    warn_if_demo_on_photos(model, [size])
    scorer = load_scorer(model, config, deltas)
    explanation, view = explain_pair(scorer, image, caption)
    title = f"{Path(image).name}: \"{caption}\" -- {config.score} {explanation.score(config.score):.4g} ({model})"
    path = save_figure(figure(explanation, view, config.score, title), out)
    doc = document(explanation, view.size[0], config.score)
    if as_json:
        print_json({"image": image, "model": model, "model_fingerprint": scorer.parts.fingerprint, "deltas": deltas,
                    "engine": config.to_dict(), "out": str(path), "unet_passes": scorer.unet_passes, **doc})
        return
    render_tables(doc, str(path))


def render_tables(doc: dict, path: str) -> None:
    """Two small tables: each family's score and peak, then each word's peak; then where the PNG went."""
    from discff_cli.render.output import format_score

    rows = [(name + (" *" if name == doc["score"] else ""), format_score(m["score"]), _xy(m["peak_xy"]))
            for name, m in doc["maps"].items()]
    print_table("each map sums to its score (* = --score)", ["map", "score", "peak x,y"], rows,
                ["left", "right", "right"])
    words = [(w["word"], _xy(w["peak_xy"])) for w in doc["words"]]
    print_table("attention per word (DAAM)", ["word", "peak x,y"], words, ["left", "right"])
    click.echo(f"maps written to {path}")


def _xy(point: list[int]) -> str:
    return f"{point[0]},{point[1]}"
