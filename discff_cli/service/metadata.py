"""What the page shows when the pointer rests on a result: what the index holds about the file, and
its caption when the collection has one.

The index records each file's size, modification time and size in pixels (items.parquet); only the
rows of one page of results are read. A caption is a sidecar text file beside the image with the
same stem (`scene-0001.png` -> `scene-0001.txt`), the convention of webdataset/img2dataset folders
and of the demo gallery; the index itself stores no text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CAPTION_CHARS = 300  # a hover shows a sentence or two, never a whole file


def item_metadata(searcher: Any, ids: list[int]) -> dict[int, dict]:
    """{id: {"width", "height", "bytes", "modified", "caption"?}} for the index rows `ids`."""
    import pyarrow.parquet as pq

    if not ids:
        return {}
    index = searcher.index
    table = pq.read_table(index.store.file(index.manifest, "items"),
                          columns=["row", "size", "mtime_ns", "width", "height"], filters=[("row", "in", ids)])
    out = {}
    for rec in table.to_pylist():
        item = {"width": rec["width"], "height": rec["height"], "bytes": rec["size"],
                "modified_ns": rec["mtime_ns"]}
        caption = sidecar_caption(index.root / index.rel_by_row[rec["row"]])
        if caption:
            item["caption"] = caption
        out[rec["row"]] = item
    return out


def sidecar_caption(image: Path) -> str | None:
    """The first CAPTION_CHARS characters of `image`'s .txt sidecar, or None when it has none."""
    text = image.with_suffix(".txt")
    try:
        if not text.is_file():
            return None
        with open(text, encoding="utf-8", errors="replace") as handle:
            caption = " ".join(handle.read(CAPTION_CHARS + 1).split())
    except OSError:
        return None
    return caption[:CAPTION_CHARS - 1] + "…" if len(caption) > CAPTION_CHARS else caption or None
