"""Do the explain maps look where the caption's objects are? Measured on demo-world scenes, whose
generator knows every object's mask (training/world/__init__.py `object_mask`).

- Single-object scenes, caption "a {colour} {shape}": the share of the `denoise` map's positive
  mass that falls inside the object's mask, against the share of the image the object covers (what
  a map spread evenly would score: chance).
- Two-object scenes, caption "A R B": for each colour and shape word, whether its attention map
  (DAAM) peaks on its own object, on the other one, or on the background; and the share of the
  word's attention mass on its own object out of the mass on both objects.

The maps are the product's own (engine/explain.py under a Scorer with the given EngineConfig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from PIL import Image

from training.world import Example, Obj, iter_split, object_mask


def mask_on_grid(obj: Obj, grid: tuple[int, int]) -> np.ndarray:
    """The object's pixel coverage averaged onto the latent grid (box filter), values in [0, 1]."""
    mask = Image.fromarray(object_mask(obj).astype(np.float32), "F")
    return np.asarray(mask.resize((grid[1], grid[0]), Image.Resampling.BOX), dtype=np.float64)


def positive_share(values: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass inside the (soft) mask; 0 for a map with no positive mass."""
    positive = np.clip(values, 0, None)
    total = positive.sum()
    return float((positive * mask).sum() / total) if total > 0 else 0.0


@dataclass
class SingleResult:
    share: float   # positive denoise mass inside the object
    chance: float  # the object's share of the image


def single_object(scorer: Any, example: Example) -> SingleResult:
    """The denoise map of "a {colour} {shape}" against the object's mask."""
    from discff_cli.engine.explain import explain_pair

    obj = example.scene.objects[0]
    explanation = explain_pair(scorer, example.image, f"a {obj.colour} {obj.shape}")
    values = explanation.maps["denoise"]
    mask = mask_on_grid(obj, values.shape)
    return SingleResult(positive_share(values, mask), float(mask.mean()))


def word_outcomes(scorer: Any, example: Example) -> list[dict]:
    """Per colour and shape word of a two-object caption: where its attention peaks, and its own-object share."""
    from discff_cli.engine.explain import explain_pair

    a, b = example.scene.objects
    caption = f"a {a.colour} {a.shape} {example.scene.relation} a {b.colour} {b.shape}"
    explanation = explain_pair(scorer, example.image, caption)
    grid = explanation.words[0].map.shape
    masks = {id(a): mask_on_grid(a, grid), id(b): mask_on_grid(b, grid)}
    owners = {a.colour: (a, b), a.shape: (a, b), b.colour: (b, a), b.shape: (b, a)}
    out = []
    for word in explanation.words:
        if word.text not in owners:
            continue
        own, other = owners[word.text]
        out.append(_where(word.text, "colour" if word.text == own.colour else "shape", word.map,
                          masks[id(own)], masks[id(other)]))
    return out


def _where(word: str, kind: str, values: np.ndarray, own: np.ndarray, other: np.ndarray) -> dict:
    row, col = np.unravel_index(int(np.argmax(values)), values.shape)
    on_own, on_other = own[row, col], other[row, col]
    peak = "own" if on_own >= 0.5 and on_own >= on_other else "other" if on_other >= 0.5 else "background"
    mass_own, mass_other = float((values * own).sum()), float((values * other).sum())
    both = mass_own + mass_other
    return {"word": word, "kind": kind, "peak": peak, "own_share": mass_own / both if both > 0 else 0.5,
            "own_area": float(own.sum() / (own.sum() + other.sum()))}


def scenes(n_objects: int, count: int, split: str = "test") -> Iterable[Example]:
    """The first `count` scenes of `split` with `n_objects` objects (deterministic)."""
    for _, example in iter_split(split, count, n_objects=n_objects):
        yield example


def summarise_single(results: list[SingleResult]) -> dict:
    shares = np.array([r.share for r in results])
    chance = np.array([r.chance for r in results])
    return {"scenes": len(results), "share_inside": _mean_ci(shares), "chance": _mean_ci(chance),
            "ratio_to_chance": float(shares.mean() / chance.mean()),
            "scenes_above_chance": float((shares > chance).mean())}


def summarise_words(outcomes: list[dict]) -> dict:
    """Per word kind (colour, shape) and overall: peak rates and the mean own-object mass share."""
    out = {}
    for kind in ("colour", "shape", "all"):
        rows = [o for o in outcomes if kind == "all" or o["kind"] == kind]
        if not rows:
            continue
        peaks = [o["peak"] for o in rows]
        on_objects = sum(p != "background" for p in peaks)
        out[kind] = {"words": len(rows),
                     "peak_own": peaks.count("own") / len(rows), "peak_other": peaks.count("other") / len(rows),
                     "peak_background": peaks.count("background") / len(rows),
                     "own_of_object_peaks": peaks.count("own") / on_objects if on_objects else None,
                     "own_mass_share": _mean_ci(np.array([o["own_share"] for o in rows])),
                     "own_area_share": float(np.mean([o["own_area"] for o in rows]))}
    return out


def _mean_ci(values: np.ndarray) -> dict:
    """Mean and a normal-approximation 95 % interval over scenes."""
    mean = float(values.mean())
    half = float(1.96 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return {"mean": mean, "ci95": [mean - half, mean + half]}
