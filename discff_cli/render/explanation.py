"""`discff explain` and the service's /explain: one pair's maps, as a PNG sheet and a JSON document.

The maps come from engine/explain.py under the very scorer `score` uses (same model, deltas,
engine options and seeds), so the number a map explains is the number `score` prints: each
family's map sums to its score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from discff_cli.errors import DiscffError

SIGNED = {"attention": False, "denoise": True, "diffusion_itm": True, "discffusion": True}


def check_explainable(config: Any, caption: str) -> None:
    """A map reads one pair over the full grid; refuse what it cannot honour, before any model loads."""
    from discff_cli.engine.explain import MAPPED

    if not caption.strip():
        raise DiscffError("Give a caption to explain, e.g. \"a red circle\".")
    if config.prune:
        raise DiscffError("--prune drops candidates part-way through the grid; a map reads one pair over the "
                          "whole grid, which is what `score` prints without --prune, so leave --prune out.")
    if config.score not in MAPPED:
        raise DiscffError(f"explain has no map for the '{config.score}' score; use one of {', '.join(MAPPED)}.")


def explain(scorer: Any, image: Any, caption: str) -> tuple[Any, Any]:
    """(Explanation, the model's view of the image: resized and center-cropped as the VAE saw it)."""
    from discff_cli.engine.explain import explain_pair
    from discff_cli.engine.preprocess import resize_center_crop
    from index.imageio import open_rgb

    check_explainable(scorer.config, caption)
    size = scorer.parts.resolution
    view = image.convert("RGB") if hasattr(image, "convert") else open_rgb(image, resize_to=size, crop_resample=True)
    return explain_pair(scorer, image, caption), resize_center_crop(view, size)


def figure(explanation: Any, view: Any, family: str, title: str) -> Any:
    """The PNG sheet: the image, `family`'s map for the whole caption, the caption's attention, one per word."""
    from discff_cli.render.heatmap import panel, sheet

    panels = [panel(view, None, "image (as the model sees it)"),
              panel(view, explanation.maps[family], f"{family}: whole caption", SIGNED[family])]
    if family != "attention":
        panels.append(panel(view, explanation.caption_attention, "attention: whole caption"))
    panels += [panel(view, word.map, f"attention: '{word.text}'") for word in explanation.words]
    return sheet(panels, title)


def save_figure(image: Any, out: str | Path) -> Path:
    """Write the PNG; a path that cannot be written is one sentence."""
    path = Path(out)
    try:
        image.save(path, format="PNG")
    except OSError as exc:
        raise DiscffError(f"Cannot write the map to '{out}' ({exc.strerror or exc}).") from None
    return path


def peak(values: np.ndarray, image_size: int) -> list[int]:
    """[x, y] in the model's image pixels of a map's largest value (centre of its latent cell)."""
    row, col = np.unravel_index(int(np.argmax(values)), values.shape)
    cell = image_size / values.shape[1]
    return [int((col + 0.5) * cell), int((row + 0.5) * cell)]


def positive_share_inside(values: np.ndarray, mask: np.ndarray) -> float:
    """Share of a map's positive mass inside `mask` (same grid), 0 when the map has none."""
    positive = np.clip(values, 0, None)
    total = float(positive.sum())
    return float((positive * mask).sum()) / total if total > 0 else 0.0


def document(explanation: Any, image_size: int, family: str) -> dict:
    """The JSON form: every family's score (its map's sum), peak and map; each word's peak and map."""
    maps = {name: {"score": explanation.score(name), "peak_xy": peak(values, image_size),
                   "grid": _rounded(values)}
            for name, values in explanation.maps.items()}
    words = [{"word": w.text, "tokens": w.tokens, "peak_xy": peak(w.map, image_size), "grid": _rounded(w.map)}
             for w in explanation.words]
    return {"caption": explanation.caption, "score": family, "score_value": explanation.score(family),
            "conditions": explanation.conditions, "grid_size": list(next(iter(explanation.maps.values())).shape),
            "image_size": image_size, "maps": maps, "words": words}


def _rounded(values: np.ndarray) -> list[list[float]]:
    return [[float(f"{v:.6g}") for v in row] for row in values.tolist()]
