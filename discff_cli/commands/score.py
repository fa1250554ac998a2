"""`discff score IMAGE CAPTIONS_TXT`: rank captions for one image."""

from __future__ import annotations

import click

from discff_cli.commands.notices import warn_if_demo_on_photos
from discff_cli.errors import DiscffError
from discff_cli.inputs import read_lines
from discff_cli.options import deltas_option, engine_options, json_option, pop_engine_config
from discff_cli.render.output import format_score, print_json, print_table


def read_captions(path: str) -> list[str]:
    """One caption per line; blank lines ignored; an empty file is an error."""
    lines = read_lines(path, "Captions file")
    captions = [line.strip() for line in lines if line.strip()]
    if not captions:
        raise DiscffError(f"Captions file '{path}' has no captions (one per line expected).")
    return captions


def check_image(path: str) -> tuple[int, int]:
    """Fail before loading any model when the image cannot be decoded; returns its (width, height)."""
    from index.imageio import ImageDecodeError, open_rgb

    try:
        return open_rgb(path).size  # the model input is made without a giant intermediate (engine/preprocess.py)
    except ImageDecodeError as exc:
        raise DiscffError(f"Cannot read image '{path}': {exc}.") from None


@click.command()
@click.argument("image")
@click.argument("captions_txt")
@engine_options(model_default=None)
@deltas_option
@json_option
def score(image: str, captions_txt: str, model: str | None, deltas: str | None, as_json: bool, **engine: object) -> None:
    """Rank the captions in CAPTIONS_TXT (one per line) for IMAGE, best first."""
    captions = read_captions(captions_txt)
    size = check_image(image)
    config = pop_engine_config(engine)
    from discff_cli.api import load_scorer
    from discff_cli.render.progress import progress_bar
    from discff_cli.engine.config import DEFAULT_MODEL
    from discff_cli.engine.deltas import model_for_deltas

    model = model_for_deltas(model, deltas, default=DEFAULT_MODEL)

    warn_if_demo_on_photos(model, [size])
    scorer = load_scorer(model, deltas, config)
    with progress_bar("scoring", enabled=not as_json, unit="U-Net items") as bar:
        ranking = scorer.rank([image] * len(captions), captions, progress=bar.update)
    if ranking.unreadable:
        raise DiscffError(f"Cannot read image '{image}': {next(iter(ranking.unreadable.values()))}.")
    ranked = sorted(zip(captions, ranking.scores[config.score].tolist()), key=lambda pair: -pair[1])
    results = [{"rank": i + 1, "text": text, "score": value} for i, (text, value) in enumerate(ranked)]
    if as_json:
        print_json({"image": image, "model": model, "model_fingerprint": scorer.parts.fingerprint, "deltas": deltas,
                    "score": config.score, "engine": config.to_dict(), **ranking.stats(), "results": results})
    else:
        rows = [(r["rank"], format_score(r["score"]), r["text"]) for r in results]
        print_table(f"{image} — {config.score} score of {model}", ["rank", "score", "caption"], rows,
                    ["right", "right", "left"])
