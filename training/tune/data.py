"""The few-shot JSONL of `discff tune`: parsing with line-numbered errors, and triplets.

Three line shapes (paths relative to the JSONL file; other keys such as "tag" are ignored):
    {"image": "a.png", "text": "...", "label": 1}                 label 0 = a non-matching pair
    {"image": "a.png", "text": "...", "negative_images": [...]}
    {"image": "a.png", "text": "...", "negative_texts": [...]}
A triplet is (image, text, negative): a negative text for the same image, or a negative image for
the same text. Labelled pairs sharing an image or a text form triplets; a positive with no
negative of its own gets one sampled from the other examples, fresh every epoch.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from discff_cli.errors import DiscffError
from discff_cli.inputs import line_error, read_jsonl


@dataclass(frozen=True)
class Example:
    """One JSONL line, validated; `line` is 1-based for messages."""

    line: int
    image: str
    text: str
    label: int = 1
    negative_images: tuple[str, ...] = field(default=())
    negative_texts: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Triplet:
    """f(image, text) should beat f(neg_image or image, neg_text or text) by the margin."""

    image: str
    text: str
    neg_image: str | None = None
    neg_text: str | None = None

    @property
    def negative_pair(self) -> tuple[str, str]:
        return (self.neg_image or self.image, self.neg_text or self.text)


def _fail(path: Path, line: int, why: str) -> DiscffError:
    return line_error(path, line, why)


def _image_path(base: Path, value: object, path: Path, line: int, key: str) -> str:
    from index.imageio import ImageDecodeError, open_rgb

    if not isinstance(value, str) or not value:
        raise _fail(path, line, f"'{key}' must be a non-empty string (an image path)")
    file = (base / value).resolve()
    if not file.is_file():
        raise _fail(path, line, f"image file '{value}' does not exist (paths are relative to the JSONL file)")
    try:
        open_rgb(str(file))
    except ImageDecodeError as exc:
        raise _fail(path, line, f"cannot read image '{value}': {exc}") from None
    return str(file)


def _str_list(raw: dict, key: str, path: Path, line: int) -> list:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise _fail(path, line, f"'{key}' must be a list")
    return value


def parse_line(raw: object, base: Path, path: Path, line: int) -> Example:
    """Validate one decoded line; every problem names the line and the key."""
    if not isinstance(raw, dict):
        raise _fail(path, line, "expected a JSON object such as {\"image\": ..., \"text\": ..., \"label\": 1}")
    for key in ("image", "text"):
        if key not in raw:
            raise _fail(path, line, f"missing key '{key}'")
    if not isinstance(raw["text"], str) or not raw["text"].strip():
        raise _fail(path, line, "'text' must be a non-empty string")
    label = raw.get("label", 1)
    if isinstance(label, bool) or label not in (0, 1):
        raise _fail(path, line, "'label' must be 0 or 1")
    image = _image_path(base, raw["image"], path, line, "image")
    neg_images = [_image_path(base, v, path, line, "negative_images") for v in _str_list(raw, "negative_images", path, line)]
    neg_texts = _str_list(raw, "negative_texts", path, line)
    if any(not isinstance(t, str) or not t.strip() for t in neg_texts):
        raise _fail(path, line, "'negative_texts' must be a list of non-empty strings")
    if label == 0 and (neg_images or neg_texts):
        raise _fail(path, line, "a label-0 pair cannot have negatives of its own")
    return Example(line, image, raw["text"].strip(), int(label), tuple(neg_images), tuple(t.strip() for t in neg_texts))


def read_examples(path: str | Path) -> list[Example]:
    """Every line of the JSONL (blank lines skipped), or a DiscffError naming the first bad line."""
    file = Path(path)
    return [parse_line(raw, file.parent, file, number) for number, raw in read_jsonl(file, "Training file")]


def file_digest(path: str | Path) -> str:
    """Identifies the training data in a resume checkpoint."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out whole lines (all their triplets) for validation; none when the file is too small."""
    order = list(range(len(examples)))
    random.Random(f"discff-tune/split/{seed}").shuffle(order)
    n_val = int(round(val_fraction * len(examples)))
    if n_val < 1 or len(examples) - n_val < 1:
        return list(examples), []
    held = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def explicit_triplets(examples: list[Example]) -> list[tuple[Example, list[Triplet]]]:
    """Per positive line, the triplets the file states (its own negatives, label-0 pairs sharing its image or text)."""
    negatives = [e for e in examples if e.label == 0]
    per_line = []
    for ex in examples:
        if ex.label == 0:
            continue
        mine = [Triplet(ex.image, ex.text, neg_text=t) for t in ex.negative_texts]
        mine += [Triplet(ex.image, ex.text, neg_image=i) for i in ex.negative_images]
        mine += [Triplet(ex.image, ex.text, neg_text=n.text) for n in negatives if n.image == ex.image and n.text != ex.text]
        mine += [Triplet(ex.image, ex.text, neg_image=n.image) for n in negatives if n.text == ex.text and n.image != ex.image]
        per_line.append((ex, mine))
    return per_line


def sampled_triplet(ex: Example, pool: list[Example], rng: random.Random) -> Triplet | None:
    """A negative text or image taken from another positive example, or None if there is none."""
    texts = sorted({e.text for e in pool if e.text != ex.text})
    images = sorted({e.image for e in pool if e.image != ex.image})
    kinds = [k for k, options in (("text", texts), ("image", images)) if options]
    if not kinds:
        return None
    if rng.choice(kinds) == "text":
        return Triplet(ex.image, ex.text, neg_text=rng.choice(texts))
    return Triplet(ex.image, ex.text, neg_image=rng.choice(images))


def epoch_triplets(examples: list[Example], pool: list[Example], rng: random.Random,
                   per_line: int = 0, hard: int = 0) -> list[Triplet]:
    """The triplets of one epoch: each positive line's stated triplets, or one sampled from `pool`.

    A file lists each line's negatives hardest first (the demo world's files put the swaps before the
    replaced attributes), so the first `hard` stated ones are trained every epoch; of the rest,
    `per_line` are drawn at random when > 0 (so an epoch costs the same for 4 or 40 negatives a
    line), all of them when 0."""
    positives = [e for e in pool if e.label == 1]
    triplets: list[Triplet] = []
    for ex, mine in explicit_triplets(examples):
        if not mine:
            sampled = sampled_triplet(ex, positives, rng)
            mine = [sampled] if sampled is not None else []
        else:
            first, rest = mine[:hard], mine[hard:]
            if 0 < per_line < len(rest):
                rest = rng.sample(rest, per_line)
            mine = first + rest
        triplets += mine
    return triplets


def require_triplets(triplets: list[Triplet], path: str | Path) -> None:
    if not triplets:
        raise DiscffError(
            f"'{path}' has no usable triplet: give a positive pair a negative (a label-0 pair sharing its image or "
            "text, negative_images or negative_texts) or add a second example to sample one from.")


@dataclass(frozen=True)
class TuningSplit:
    """The lines to train on and the held-out triplets. Every few-shot learner (discff tune, the CLIP
    last-layer baseline) takes them from here, so their held-out lines match for the same seed."""

    examples: list[Example]
    train: list[Example]
    val_triplets: list[Triplet]
    val_lines: list[int]


def tuning_split(path: str | Path, val_fraction: float, seed: int, per_line: int = 0, hard: int = 0) -> TuningSplit:
    """Read the file, hold out `val_fraction` of its lines (none when that would leave nothing to train on)."""
    examples = read_examples(path)
    train, val = split_examples(examples, val_fraction, seed)
    triplets = epoch_triplets(train, train, random.Random(0))
    if not triplets:  # too few lines to hold any out: train on all, keep the last result
        train, val = examples, []
        triplets = epoch_triplets(train, train, random.Random(0))
    require_triplets(triplets, path)
    val_triplets = epoch_triplets(val, examples, random.Random(f"discff-tune/val/{seed}"), per_line, hard)
    return TuningSplit(examples, train, val_triplets, [e.line for e in val])


def epoch_batches(train: list[Example], seed: int, epoch: int, per_line: int, batch_size: int,
                  hard: int = 0) -> list[list[Triplet]]:
    """The shuffled batches of one 0-based epoch; deterministic per (seed, epoch), so a resumed run
    sees the same batches."""
    rng = random.Random(f"discff-tune/epoch/{seed}/{epoch}")
    triplets = epoch_triplets(train, train, rng, per_line, hard)
    rng.shuffle(triplets)
    size = max(1, batch_size)
    return [triplets[i:i + size] for i in range(0, len(triplets), size)]
