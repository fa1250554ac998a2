"""Drafts -> eval Items: make each image file once, drop items whose images cannot be used (one
report line, not one error per item), and optionally keep the result as an eval JSONL that
`discff eval OUT` reads back to the same items."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from discff_cli.evaluation.datasets.common import Draft, missing_report, write_atomic
from discff_cli.render.progress import progress_bar
from discff_cli.errors import DiscffError
from discff_cli.evaluation.items import IMAGE_TO_TEXTS, MATRIX, Item


def _usable(source, cache: Path, made: dict, failed: dict[str, str]) -> Path | None:
    """The source's file if it exists and decodes; failures are recorded once per source."""
    from index.imageio import ImageDecodeError, open_rgb

    if source in made:
        return made[source]
    path = None
    try:
        path = source.materialize(cache).resolve()
        open_rgb(path)
    except FileNotFoundError:
        failed.setdefault(source.name, "file not found")
        path = None
    except ImageDecodeError as exc:
        failed.setdefault(source.name, str(exc))
        path = None
    except OSError as exc:  # e.g. a source that cannot be stat'ed (permissions)
        failed.setdefault(source.name, f"unreadable ({exc.strerror or exc})")
        path = None
    made[source] = path
    return path


def build_items(drafts: Sequence[Draft], cache: Path, where: str, progress: bool,
                warn: Callable[[str], None]) -> tuple[list[Item], list[Draft]]:
    """Items for every draft whose images are usable, numbered 1.. in order (= lines of a written JSONL)."""
    made: dict = {}
    failed: dict[str, str] = {}
    items, kept = [], []
    with progress_bar("preparing images", len(drafts), progress, minimum=200) as tick:  # ARO: tens of thousands
        for draft in drafts:
            paths = [_usable(s, cache, made, failed) for s in draft.images]
            tick()
            if any(p is None for p in paths):
                continue
            items.append(Item(len(items) + 1, draft.kind, tuple(paths), draft.texts, draft.answer, draft.tag))
            kept.append(draft)
    if failed and not items:
        raise DiscffError(missing_report(failed, len(drafts), where) + " Nothing is left to evaluate: is the image "
                          "folder right (--images DIR)?")
    if failed:
        warn(missing_report(failed, len(drafts) - len(items), where))
    return items, kept


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows): keep it absolute
        return str(path)


def eval_record(item: Item, source: dict, base: Path) -> dict:
    """The eval-JSONL line of an item (eval_data's three shapes), plus where it came from."""
    images = [_relative(p, base) for p in item.images]
    if item.kind == MATRIX:
        record = {"images": images, "texts": list(item.texts)}
    elif item.kind == IMAGE_TO_TEXTS:
        record = {"image": images[0], "texts": list(item.texts), "answer": item.answer}
    else:
        record = {"text": item.texts[0], "images": images, "answer": item.answer}
    return {**record, "tag": item.tag, "source": source}


def write_eval_jsonl(items: Sequence[Item], drafts: Sequence[Draft], out: str | Path) -> None:
    """Keep the converted items as an eval JSONL (image paths relative to it), written atomically."""
    out = Path(out)
    base = out.parent.resolve()
    text = "".join(json.dumps(eval_record(item, draft.source, base), ensure_ascii=False) + "\n"
                   for item, draft in zip(items, drafts))
    write_atomic(out, lambda f: f.write(text.encode("utf-8")))
