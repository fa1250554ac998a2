"""What the page shows when the pointer rests on a result: what the index holds about the file, and
its caption when the collection has one.

The index records each file's size, modification time and size in pixels (items.parquet); only the
rows of one page of results are read. A caption is a sidecar text file beside the image with the
same stem (`scene-0001.png` -> `scene-0001.txt`), read as it is now; a webdataset sample's `.txt`
or a parquet row's caption column, as the items table stored it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CAPTION_CHARS = 300  # a hover shows a sentence or two, never a whole file


def item_metadata(searcher: Any, ids: list[int]) -> dict[int, dict]:
    """{id: {"width", "height", "bytes", "modified", "caption"?}} for the index rows `ids`."""
    import pyarrow.parquet as pq

    from index.containers import names_member

    if not ids:
        return {}
    index = searcher.index
    path = index.store.file(index.manifest, "items")
    stored = "caption" in pq.ParquetFile(path).schema_arrow.names  # absent from indexes built before captions
    table = pq.read_table(path, columns=["row", "size", "mtime_ns", "width", "height"] + ["caption"] * stored,
                          filters=[("row", "in", ids)])
    out = {}
    for rec in table.to_pylist():
        item = {"width": rec["width"], "height": rec["height"], "bytes": rec["size"],
                "modified_ns": rec["mtime_ns"]}
        file = index.root / index.rel_by_row[rec["row"]]
        # a loose file's .txt is read as it is now (edited since the build, the page shows the edit);
        # a shard member or parquet row has no file beside it: its caption is the one stored
        caption = (None if names_member(file) else sidecar_caption(file)) or (_short(rec["caption"]) if stored else None)
        if caption:
            item["caption"] = caption
        out[rec["row"]] = item
    return out


def _short(caption: str | None) -> str | None:
    caption = " ".join((caption or "").split())
    return caption[:CAPTION_CHARS - 1] + "…" if len(caption) > CAPTION_CHARS else caption or None


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
