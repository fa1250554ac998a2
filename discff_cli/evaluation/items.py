"""Reading and validating `discff eval` JSONL files.

The whole file is checked before any model is loaded: a malformed line, a wrong field or an
image that is missing or cannot be decoded stops the run with its line number, so nothing is
ever scored half-way and a long evaluation never dies at item 900 of 1000.

Three item kinds (paths relative to the JSONL file; "tag" optional on every kind):

    {"images": [a, b], "texts": [ta, tb]}            image i matches text i (Winoground-style)
    {"text": t, "images": [a, b, c], "answer": k}    pick the image that matches the text
    {"image": a, "texts": [t1, t2, t3], "answer": k} pick the text that matches the image
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from discff_cli.errors import DiscffError
from discff_cli.inputs import line_error, read_jsonl

MATRIX, TEXT_TO_IMAGES, IMAGE_TO_TEXTS = "matrix", "text_to_images", "image_to_texts"
UNTAGGED = "untagged"


@dataclass(frozen=True)
class Item:
    """One labelled matching task.

    `pairs()` lists the (image, text) pairs it needs scored; a matrix item of n images and n
    texts needs all n*n pairs, a choice item one pair per candidate.
    """

    line: int
    kind: str
    images: tuple[Path, ...]
    texts: tuple[str, ...]
    answer: int | None
    tag: str

    def pairs(self) -> list[tuple[Path, str]]:
        if self.kind == MATRIX:
            return [(img, txt) for img in self.images for txt in self.texts]
        if self.kind == TEXT_TO_IMAGES:
            return [(img, self.texts[0]) for img in self.images]
        return [(self.images[0], txt) for txt in self.texts]

    @property
    def n_candidates(self) -> int:
        return len(self.texts) if self.kind == IMAGE_TO_TEXTS else len(self.images)


def _fail(path: Path, line: int, message: str) -> DiscffError:
    return line_error(path, line, message)


def _strings(value: Any, field: str, path: Path, line: int) -> list[str]:
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(path, line, f'"{field}" must be a list of at least two non-empty strings.')
    return value


def _string(value: Any, field: str, path: Path, line: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, line, f'"{field}" must be a non-empty string.')
    return value


def _answer(value: Any, n: int, path: Path, line: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise _fail(path, line, f'"answer" must be an integer index from 0 to {n - 1}.')
    return value


def parse_item(record: Any, path: Path, line: int) -> Item:
    """Turn one decoded JSON line into an Item, or raise with the line number."""
    if not isinstance(record, dict):
        raise _fail(path, line, "expected a JSON object.")
    tag = record.get("tag", UNTAGGED)
    if not isinstance(tag, str) or not tag.strip():
        raise _fail(path, line, '"tag" must be a non-empty string when present.')
    has = {key for key in ("image", "images", "text", "texts", "answer") if key in record}
    if has == {"images", "texts"}:
        images = _strings(record["images"], "images", path, line)
        texts = _strings(record["texts"], "texts", path, line)
        if len(images) != len(texts):
            raise _fail(path, line, f'"images" and "texts" must have the same length (image i matches text i); '
                                    f"got {len(images)} and {len(texts)}.")
        return Item(line, MATRIX, tuple(Path(p) for p in images), tuple(texts), None, tag)
    if has == {"text", "images", "answer"}:
        images = _strings(record["images"], "images", path, line)
        text = _string(record["text"], "text", path, line)
        return Item(line, TEXT_TO_IMAGES, tuple(Path(p) for p in images), (text,),
                    _answer(record["answer"], len(images), path, line), tag)
    if has == {"image", "texts", "answer"}:
        image = _string(record["image"], "image", path, line)
        texts = _strings(record["texts"], "texts", path, line)
        return Item(line, IMAGE_TO_TEXTS, (Path(image),), tuple(texts), _answer(record["answer"], len(texts), path, line),
                    tag)
    raise _fail(path, line, 'expected {"images": [...], "texts": [...]}, {"text": ..., "images": [...], "answer": k} '
                            'or {"image": ..., "texts": [...], "answer": k}.')


def _resolve_images(item: Item, base: Path, path: Path, checked: dict[Path, str | None]) -> Item:
    """Make image paths absolute (relative to the JSONL) and make sure each one decodes."""
    from index.imageio import ImageDecodeError, open_rgb

    resolved = []
    for rel in item.images:
        full = (base / rel.expanduser()).resolve()
        if full not in checked:
            try:
                open_rgb(full)
                checked[full] = None
            except ImageDecodeError as exc:
                checked[full] = str(exc)
        if checked[full] is not None:
            raise _fail(path, item.line, f"image '{rel}' cannot be used: {checked[full]}.")
        resolved.append(full)
    return Item(item.line, item.kind, tuple(resolved), item.texts, item.answer, item.tag)


def load_items(path: str | Path, check_images: bool = True) -> list[Item]:
    """Every item of the file, validated; raises DiscffError naming the first bad line."""
    path = Path(path)
    items, checked = [], {}
    for number, record in read_jsonl(path, "Eval file"):
        item = parse_item(record, path, number)
        items.append(_resolve_images(item, path.parent, path, checked) if check_images else item)
    if not items:
        raise DiscffError(f"Eval file '{path}' has no items (one JSON object per line expected).")
    return items


def first_per_tag(items: Sequence, n: int | None) -> list:
    """The first n items of each tag, in file order: `--max-per-tag`'s quick, reproducible slice
    (anything with a `.tag`: eval items, or benchmark rows before their images are prepared)."""
    if n is None:
        return list(items)
    seen: dict[str, int] = {}
    kept = []
    for item in items:
        seen[item.tag] = seen.get(item.tag, 0) + 1
        if seen[item.tag] <= n:
            kept.append(item)
    return kept
