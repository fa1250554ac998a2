"""The demo world: seeded 64x64 scenes of coloured shapes with compositional captions.

Why it exists: Stable Diffusion and OpenCLIP weights cannot be downloaded offline or in CI,
so the project ships tiny models trained on this world. Because the generator *knows* every
scene, it can (a) write true captions and compositional hard negatives (swapped colours,
swapped shapes, reversed relations, replaced attributes) and (b) judge any image -- including
images a model generates -- with pixel rules (`check_image`).

Contract (docs/world_api.md): Obj, Scene, sample_scene, render, captions, caption,
hard_negatives, make_split, check_image. CLI:

    python -m training.world export-eval DIR [--n-per-tag 200]
    python -m training.world export-fewshot FILE [--fraction 0.05] [--swaps-only]
"""

from __future__ import annotations

import colorsys
import random
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Equivalent phrasings of each relation, in a fixed order so captions of two scenes align.
PHRASES = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
SINGLE_TEMPLATES = ("a {c} {s}", "a picture of a {c} {s}", "one {c} {s} on a gray background")
# More phrasings for *training* only (extra_captions). captions(), and so every exported eval
# file, hard negative and the test split, never use them.
EXTRA_PHRASES = {
    "left of": ("is left of", "on the left of", "is to the left of"),
    "right of": ("is right of", "on the right of", "is to the right of"),
    "above": ("is above", "is over", "is higher than"),
    "below": ("is below", "beneath", "is lower than"),
}
EXTRA_SINGLE_TEMPLATES = ("there is a {c} {s}", "a {c} {s} shape")
# Base HSV of each colour; hue bins below are what check_image uses to recover it.
HSV = {"red": (0.0, 0.82, 0.86), "yellow": (0.145, 0.85, 0.92), "green": (0.36, 0.78, 0.68),
       "blue": (0.62, 0.80, 0.86)}
HUE_BINS = {"red": ((0.0, 0.07), (0.93, 1.0)), "yellow": ((0.09, 0.22),), "green": ((0.24, 0.50),),
            "blue": ((0.52, 0.78),)}
MIN_SIZE, MAX_SIZE = 14, 24
MARGIN = 2
GAP = 3          # minimum free pixels between two objects' boxes along the relation axis
SUPERSAMPLE = 4
MIN_AREA = 25    # pixels a colour needs in an image to count as present


@dataclass(frozen=True)
class Obj:
    """One shape; (cx, cy) is the centre of its size x size bounding box, in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Scene:
    """One or two objects; `relation` is objects[0] relative to objects[1] (None for one object)."""

    objects: tuple[Obj, ...]
    relation: str | None = None


@dataclass
class Example:
    image: Image.Image
    scene: Scene
    caption: str


# ----------------------------------------------------------------------------- sampling


def _place_single(rng: random.Random, shape: str, colour: str) -> Obj:
    size = rng.uniform(MIN_SIZE, MAX_SIZE)
    lo, hi = MARGIN + size / 2, SIZE - MARGIN - size / 2
    return Obj(shape, colour, rng.uniform(lo, hi), rng.uniform(lo, hi), size)


def _place_pair(rng: random.Random, relation: str, shapes: tuple[str, str],
                colours: tuple[str, str]) -> tuple[Obj, Obj]:
    """Place two objects so `relation` holds unambiguously: a clear gap on its axis and a
    small offset on the other axis (at most 30% of the main-axis distance)."""
    s0, s1 = rng.uniform(MIN_SIZE, MAX_SIZE), rng.uniform(MIN_SIZE, MAX_SIZE)
    # "first" is the object with the smaller coordinate on the main axis (left / top).
    first_is_0 = relation in ("left of", "above")
    sf, ss = (s0, s1) if first_is_0 else (s1, s0)
    d_min = (sf + ss) / 2 + GAP
    d_max = SIZE - 2 * MARGIN - (sf + ss) / 2
    d = rng.uniform(d_min, d_max)
    a_first = rng.uniform(MARGIN + sf / 2, SIZE - MARGIN - ss / 2 - d)
    a_second = a_first + d
    # Cross axis: a shared base with a small offset, both boxes inside the image.
    off = rng.uniform(-0.3, 0.3) * d
    lo = max(MARGIN + sf / 2, MARGIN + ss / 2 - off)
    hi = min(SIZE - MARGIN - sf / 2, SIZE - MARGIN - ss / 2 - off)
    if hi < lo:
        off, lo, hi = 0.0, MARGIN + max(sf, ss) / 2, SIZE - MARGIN - max(sf, ss) / 2
    b_first = rng.uniform(lo, hi)
    b_second = b_first + off
    horizontal = relation in ("left of", "right of")
    pf = (a_first, b_first) if horizontal else (b_first, a_first)
    ps = (a_second, b_second) if horizontal else (b_second, a_second)
    p0, p1 = (pf, ps) if first_is_0 else (ps, pf)
    return (Obj(shapes[0], colours[0], p0[0], p0[1], s0), Obj(shapes[1], colours[1], p1[0], p1[1], s1))


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """A random scene. Two-object scenes use two different colours *and* two different shapes,
    so every hard negative (colour swap, shape swap) describes a scene that is really false."""
    n = n_objects if n_objects is not None else rng.choice((1, 2))
    if n == 1:
        return Scene((_place_single(rng, rng.choice(SHAPES), rng.choice(COLOURS)),), None)
    if n != 2:
        raise ValueError("n_objects must be 1 or 2")
    shapes = tuple(rng.sample(SHAPES, 2))
    colours = tuple(rng.sample(COLOURS, 2))
    relation = rng.choice(RELATIONS)
    return Scene(_place_pair(rng, relation, shapes, colours), relation)


# ----------------------------------------------------------------------------- rendering


def _jittered_rgb(rng: random.Random, colour: str) -> tuple[int, int, int]:
    h, s, v = HSV[colour]
    h = (h + rng.uniform(-0.02, 0.02)) % 1.0
    s = min(1.0, max(0.0, s + rng.uniform(-0.08, 0.08)))
    v = min(1.0, max(0.0, v + rng.uniform(-0.08, 0.08)))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(obj: Obj, k: int) -> list[tuple[float, float]]:
    h = obj.size / 2
    cx, cy = obj.cx * k, obj.cy * k
    if obj.shape == "square":
        return [(cx - h * k, cy - h * k), (cx + h * k, cy - h * k), (cx + h * k, cy + h * k), (cx - h * k, cy + h * k)]
    if obj.shape == "triangle":  # apex up, base at the bottom of the box
        return [(cx, cy - h * k), (cx + h * k, cy + h * k), (cx - h * k, cy + h * k)]
    raise ValueError(obj.shape)


def _coverage(obj: Obj, k: int) -> np.ndarray:
    """Fraction of each pixel the object covers (drawn k x k supersampled, box-filtered)."""
    big = Image.new("L", (SIZE * k, SIZE * k), 0)
    draw = ImageDraw.Draw(big)
    if obj.shape == "circle":
        h = obj.size / 2
        draw.ellipse([(obj.cx - h) * k, (obj.cy - h) * k, (obj.cx + h) * k, (obj.cy + h) * k], fill=255)
    else:
        draw.polygon(_polygon(obj, k), fill=255)
    return np.asarray(big.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64) / 255.0


def object_mask(obj: Obj) -> np.ndarray:
    """The object's coverage of each of the SIZE x SIZE pixels, in [0, 1], from the scene geometry
    (the same supersampled drawing render uses): where in the image a word about it should look."""
    return _coverage(obj, SUPERSAMPLE)


def render(scene: Scene, rng: random.Random) -> Image.Image:
    """Draw the scene: light gray background with a faint gradient and noise, anti-aliased
    shapes (4x supersampled) with per-object hue/saturation/brightness jitter."""
    k = SUPERSAMPLE
    base = rng.uniform(195, 235)
    gx, gy = rng.uniform(-8, 8), rng.uniform(-8, 8)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
    nrng = np.random.default_rng(rng.getrandbits(32))
    bg = base + gx * xs + gy * ys + nrng.normal(0, 1.5, (SIZE, SIZE))
    out = np.repeat(bg[..., None], 3, axis=2)
    for obj in scene.objects:
        alpha = _coverage(obj, k)[..., None]
        out = alpha * np.array(_jittered_rgb(rng, obj.colour), dtype=np.float64) + (1 - alpha) * out
    return Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------- captions


def _desc(obj: Obj) -> str:
    return f"a {obj.colour} {obj.shape}"


def captions(scene: Scene) -> list[str]:
    """Every true phrasing of the scene, in a fixed template order.

    Two objects A (objects[0]) and B with relation R: "A R B" in each phrasing of R, then
    "B inverse(R) A" in each phrasing. Captions of two scenes with the same structure align
    index by index, which is what hard_negatives relies on.
    """
    return _phrased(scene, SINGLE_TEMPLATES, PHRASES)


def extra_captions(scene: Scene) -> list[str]:
    """True phrasings beyond captions(scene), for training a model on more ways of saying the
    same scene (EXTRA_PHRASES, EXTRA_SINGLE_TEMPLATES). Kept apart so the test split, the eval
    files and the hard negatives stay exactly what they were."""
    return _phrased(scene, EXTRA_SINGLE_TEMPLATES, EXTRA_PHRASES)


def _phrased(scene: Scene, single_templates: Sequence[str], phrases: dict[str, Sequence[str]]) -> list[str]:
    """Every phrasing of `scene`: A R B with each phrase of R, then B inverse(R) A."""
    if len(scene.objects) == 1:
        o = scene.objects[0]
        return [t.format(c=o.colour, s=o.shape) for t in single_templates]
    a, b = scene.objects
    rel = scene.relation
    out = [f"{_desc(a)} {p} {_desc(b)}" for p in phrases[rel]]
    out += [f"{_desc(b)} {p} {_desc(a)}" for p in phrases[INVERSE[rel]]]
    return out


def caption(scene: Scene, rng: random.Random) -> str:
    """One true phrasing at random."""
    return rng.choice(captions(scene))


def swap_colours(scene: Scene) -> Scene:
    a, b = scene.objects
    return Scene((replace(a, colour=b.colour), replace(b, colour=a.colour)), scene.relation)


def swap_shapes(scene: Scene) -> Scene:
    a, b = scene.objects
    return Scene((replace(a, shape=b.shape), replace(b, shape=a.shape)), scene.relation)


def reverse_relation(scene: Scene) -> Scene:
    """Same objects, relation reversed in the caption (positions untouched: a false description)."""
    return Scene(scene.objects, INVERSE[scene.relation])


def replaced_attribute_scenes(scene: Scene) -> list[Scene]:
    """Each object with its colour (or shape) replaced by one that is not in the scene."""
    used_c = {o.colour for o in scene.objects}
    used_s = {o.shape for o in scene.objects}
    out = []
    for i, o in enumerate(scene.objects):
        for c in COLOURS:
            if c not in used_c:
                out.append(_with(scene, i, replace(o, colour=c)))
        for s in SHAPES:
            if s not in used_s:
                out.append(_with(scene, i, replace(o, shape=s)))
    return out


def _with(scene: Scene, i: int, obj: Obj) -> Scene:
    objs = list(scene.objects)
    objs[i] = obj
    return Scene(tuple(objs), scene.relation)


def hard_negatives(scene: Scene) -> dict[str, list[str]]:
    """Tag -> false captions.

    For "attribute_swap", "shape_swap" and the first block of "relation_swap", item j is the
    same template as captions(scene)[j] (aligned), so a pair (true, negative) differs only in
    the compositional detail. "relation_swap" then lists the two perpendicular relations.
    "replaced_attribute" lists each replaced scene's captions, block after block.
    Single-object scenes get only "replaced_attribute".
    """
    out: dict[str, list[str]] = {}
    if len(scene.objects) == 2:
        out["attribute_swap"] = captions(swap_colours(scene))
        out["shape_swap"] = captions(swap_shapes(scene))
        rel = scene.relation
        perpendicular = [r for r in RELATIONS if r not in (rel, INVERSE[rel])]
        out["relation_swap"] = captions(reverse_relation(scene))
        for r in perpendicular:
            out["relation_swap"] += captions(Scene(scene.objects, r))
    out["replaced_attribute"] = [c for s in replaced_attribute_scenes(scene) for c in captions(s)]
    return out


# ----------------------------------------------------------------------------- splits

SPLITS = ("train", "val", "test")


def example_rng(split: str, index: int, seed: int = 0) -> random.Random:
    """The random stream of one example: distinct per split, so splits never share a stream,
    and independent of n, so make_split(s, 10) is a prefix of make_split(s, 100)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    return random.Random(f"discff-world/{split}/{seed}/{index}")


def make_example(split: str, index: int, seed: int = 0) -> Example:
    rng = example_rng(split, index, seed)
    scene = sample_scene(rng)
    image = render(scene, rng)
    return Example(image, scene, caption(scene, rng))


def make_split(split: str, n: int, seed: int = 0) -> list[Example]:
    """n examples of a split (about half one-object, half two-object scenes); deterministic."""
    return [make_example(split, i, seed) for i in range(n)]


# ----------------------------------------------------------------------------- checking


def _hsv_arrays(img: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hsv = np.asarray(img.convert("RGB").convert("HSV"), dtype=np.float64) / 255.0
    return hsv[..., 0], hsv[..., 1], hsv[..., 2]


def colour_masks(img: Image.Image) -> dict[str, np.ndarray]:
    """Boolean mask per world colour: saturated pixels whose hue falls in that colour's bin.
    The gray background has no saturation, so it is never in any mask."""
    h, s, v = _hsv_arrays(img)
    sat = (s > 0.35) & (v > 0.25)
    masks = {}
    for colour, bins in HUE_BINS.items():
        m = np.zeros_like(sat)
        for lo, hi in bins:
            m |= (h >= lo) & (h <= hi)
        masks[colour] = m & sat
    return masks


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component (drops stray pixels of a generated image)."""
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    hgt, wid = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < hgt and 0 <= nx < wid and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def classify_shape(mask: np.ndarray) -> str | None:
    """Shape of a blob from its geometry: the fraction of its bounding box it fills
    (square ~1, circle ~pi/4, triangle ~1/2) and the share of its area in the top half of
    the box (an apex-up triangle has ~1/4 there, circle and square ~1/2)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < MIN_AREA:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fill = len(ys) / ((y1 - y0) * (x1 - x0))
    top = np.sum(ys < (y0 + y1) / 2) / len(ys)
    if top < 0.38 or fill < 0.62:
        return "triangle"
    return "square" if fill > 0.89 else "circle"


def check_image(img: Image.Image, scene: Scene) -> dict[str, bool]:
    """Judge an image against a scene with pixel rules.

    colour_ok: every colour of the scene is present (>= MIN_AREA pixels) and no other world
    colour is. shape_ok: the largest blob of each object's colour has that object's shape.
    relation_ok: the blobs' centroids stand in the scene's relation along their dominant
    axis (True for one-object scenes). Two-object scenes have two different colours, so each
    object is found by its colour.
    """
    masks = colour_masks(img)
    wanted = {o.colour for o in scene.objects}
    present = {c for c, m in masks.items() if m.sum() >= MIN_AREA}
    colour_ok = wanted <= present and not (present - wanted)
    blobs = {c: _largest_component(masks[c]) for c in wanted}
    shape_ok = all(classify_shape(blobs[o.colour]) == o.shape for o in scene.objects)
    relation_ok = True
    if len(scene.objects) == 2:
        relation_ok = _relation(blobs[scene.objects[0].colour], blobs[scene.objects[1].colour]) == scene.relation
    return {"colour_ok": bool(colour_ok), "shape_ok": bool(shape_ok), "relation_ok": bool(relation_ok),
            "ok": bool(colour_ok and shape_ok and relation_ok)}


def _relation(m0: np.ndarray, m1: np.ndarray) -> str | None:
    if m0.sum() == 0 or m1.sum() == 0:
        return None
    y0, x0 = (c.mean() for c in np.nonzero(m0))
    y1, x1 = (c.mean() for c in np.nonzero(m1))
    dx, dy = x0 - x1, y0 - y1
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


# ----------------------------------------------------------------------------- export


def iter_split(split: str, n: int, seed: int = 0, n_objects: int | None = None) -> Iterable[tuple[int, Example]]:
    """Examples of a split, optionally only those with n_objects objects (index kept)."""
    i = 0
    found = 0
    while found < n:
        ex = make_example(split, i, seed)
        if n_objects is None or len(ex.scene.objects) == n_objects:
            found += 1
            yield i, ex
        i += 1


if __name__ == "__main__":
    from training.world.export import main

    main()
