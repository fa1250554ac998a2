"""Write the demo world as files: eval JSONL for `discff eval` and few-shot JSONL for `discff tune`.

    python -m training.world export-eval DIR [--n-per-tag 200] [--seed 0]
    python -m training.world export-fewshot FILE [--fraction 0.05] [--seed 0] [--swaps-only]

Why files: anyone can reproduce the README table with `discff eval DIR/<tag>.jsonl`, and
the same files exercise every path of the eval and tune commands on real images.
Image paths inside each JSONL are relative to it.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from training import world as w

# Nominal split sizes: the demo models train on the first TRAIN_SIZE train examples.
SPLIT_SIZES = {"train": 20000, "val": 1000, "test": 2000}
SWAP_TAGS = ("attribute_swap", "relation_swap", "shape_swap")
SINGLE_CAPTIONS = [f"a {c} {s}" for c in w.COLOURS for s in w.SHAPES]


def _counterpart(scene: w.Scene, tag: str, rng: random.Random) -> w.Scene:
    """A renderable scene that the tag's negative caption describes truly."""
    if tag == "attribute_swap":
        return w.swap_colours(scene)
    if tag == "shape_swap":
        return w.swap_shapes(scene)
    a, b = scene.objects
    rel = w.INVERSE[scene.relation]
    na, nb = w._place_pair(rng, rel, (a.shape, b.shape), (a.colour, b.colour))
    return w.Scene((na, nb), rel)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def export_eval(out_dir: Path, n_per_tag: int = 200, seed: int = 0, split: str = "test") -> dict[str, int]:
    """Write single_object.jsonl, attribute_swap.jsonl, relation_swap.jsonl, shape_swap.jsonl
    (one image, several texts, an answer) and winoground.jsonl (2 images x 2 texts per swap
    tag) from `split` (the test split; "val" for the held-out curve a training run watches).
    Returns the number of items per file."""
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"single_object": [], "single_object_t2i": [], "winoground": [],
                                   **{t: [] for t in SWAP_TAGS}}
    singles = []
    for i, ex in w.iter_split(split, n_per_tag, seed, n_objects=1):
        name = f"images/{split}_{i:05d}.png"
        ex.image.save(out_dir / name)
        singles.append((name, w.captions(ex.scene)[0]))
        rows["single_object"].append({"image": name, "texts": SINGLE_CAPTIONS,
                                      "answer": SINGLE_CAPTIONS.index(w.captions(ex.scene)[0]),
                                      "tag": "single_object"})
    rows["single_object_t2i"] = _text_to_image_rows(out_dir, singles, seed, split)
    for i, ex in w.iter_split(split, n_per_tag, seed, n_objects=2):
        name = f"images/{split}_{i:05d}.png"
        ex.image.save(out_dir / name)
        rng = random.Random(f"discff-world/export/{seed}/{i}")
        negatives = w.hard_negatives(ex.scene)
        for tag in SWAP_TAGS:
            j = rng.randrange(len(w.captions(ex.scene)))
            true, false = w.captions(ex.scene)[j], negatives[tag][j]
            answer = rng.randrange(2)
            texts = [true, false] if answer == 0 else [false, true]
            rows[tag].append({"image": name, "texts": texts, "answer": answer, "tag": tag})
            other = _counterpart(ex.scene, tag, rng)
            other_name = f"images/{split}_{i:05d}_{tag}.png"
            w.render(other, rng).save(out_dir / other_name)
            # The counterpart's own caption in the same template as `false` describes it truly.
            rows["winoground"].append({"images": [name, other_name], "texts": [true, w.captions(other)[j]],
                                       "tag": tag})
    for key, items in rows.items():
        _write_jsonl(out_dir / f"{key}.jsonl", items)
    return {key: len(items) for key, items in rows.items()}


def _text_to_image_rows(out_dir: Path, singles: list[tuple[str, str]], seed: int, split: str) -> list[dict]:
    """Text -> image items: each single-object caption against one image of every colour x shape
    (12 candidates), its own image the answer. Distractors come from the test split's other
    single-object scenes, so every candidate is a real test image."""
    pool: dict[str, list[str]] = {}
    for name, caption in singles:
        pool.setdefault(caption, []).append(name)
    extra = iter(w.iter_split(split, 10 * len(SINGLE_CAPTIONS) + len(singles), seed, n_objects=1))
    while any(caption not in pool for caption in SINGLE_CAPTIONS):
        i, ex = next(extra)
        caption, name = w.captions(ex.scene)[0], f"images/{split}_{i:05d}.png"
        if caption not in pool:
            ex.image.save(out_dir / name)
            pool[caption] = [name]
    rows = []
    for k, (name, caption) in enumerate(singles):
        rng = random.Random(f"discff-world/t2i/{seed}/{k}")
        images = [name if c == caption else rng.choice(pool[c]) for c in SINGLE_CAPTIONS]
        rng.shuffle(images)
        rows.append({"text": caption, "images": images, "answer": images.index(name), "tag": "single_object_t2i"})
    return rows


def fewshot_negatives(scene: w.Scene, j: int, swaps_only: bool = False) -> list[str]:
    """One false caption per hard-negative tag, in the same template as captions(scene)[j]
    (then the replaced-attribute ones, unless `swaps_only`)."""
    k = len(w.captions(scene))
    negatives = w.hard_negatives(scene)
    out = [negatives[tag][j] for tag in SWAP_TAGS if tag in negatives]
    if not swaps_only:
        out += negatives["replaced_attribute"][j::k]
    return out


def export_fewshot(path: Path, fraction: float = 0.05, seed: int = 0, swaps_only: bool = False) -> int:
    """Write a few-shot tuning JSONL from the first `fraction` of the train split, with the
    images in `<stem>_images/` next to it. Returns the number of lines.

    `swaps_only` keeps the two-object scenes and only their attribute, relation and shape swaps:
    a file that trains nothing but the compositional distinctions the swap tags measure."""
    path = Path(path)
    n = max(1, round(fraction * SPLIT_SIZES["train"]))
    img_dir = path.parent / f"{path.stem}_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ex in enumerate(w.make_split("train", n, seed)):
        if swaps_only and len(ex.scene.objects) < 2:
            continue
        name = f"{img_dir.name}/train_{i:05d}.png"
        ex.image.save(path.parent / name)
        j = w.captions(ex.scene).index(ex.caption)
        tag = "single_object" if len(ex.scene.objects) == 1 else "two_objects"
        rows.append({"image": name, "text": ex.caption, "negative_texts": fewshot_negatives(ex.scene, j, swaps_only),
                     "tag": tag})
    _write_jsonl(path, rows)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.world", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("export-eval", help="write the test split as eval JSONL files + images")
    ev.add_argument("dir", type=Path)
    ev.add_argument("--n-per-tag", type=int, default=200)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--split", choices=("test", "val"), default="test",
                    help="val: held-out scenes for a training run's curve (the test split stays unseen)")
    fs = sub.add_parser("export-fewshot", help="write a few-shot tuning JSONL from the train split")
    fs.add_argument("file", type=Path)
    fs.add_argument("--fraction", type=float, default=0.05)
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--swaps-only", action="store_true",
                    help="only two-object scenes, with only their attribute/relation/shape swaps as negatives")
    args = parser.parse_args(argv)
    if args.cmd == "export-eval":
        counts = export_eval(args.dir, args.n_per_tag, args.seed, args.split)
        for key, n in counts.items():
            print(f"{args.dir / (key + '.jsonl')}: {n} items")
    else:
        if not 0 < args.fraction <= 1:
            parser.error("--fraction must be in (0, 1]")
        n = export_fewshot(args.file, args.fraction, args.seed, args.swaps_only)
        print(f"{args.file}: {n} lines")


if __name__ == "__main__":
    main()
