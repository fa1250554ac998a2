"""Parquet files of images as a collection: rows read in place, one row group at a time.

Two layouts are what users already have:

  HF `datasets`   an `Image` feature is a struct column `{bytes: binary, path: string}`
                  (`Dataset.to_parquet`, the Hub's parquet conversion); the caption is usually `text`
  img2dataset     `--output_format parquet` writes a `jpg` (or `png`, `webp`) binary column beside
                  `caption`, `key`, `url`, `status`, `width`, `height`...

An image is the row `FILE.parquet#ROW` (ROW counted from 0 over the whole file); search results,
`score`, `--rerank`, `--latents` and the service read it through `read_row`, which reads the row
group holding it (cached: readers walking rows in order read each group once). The image and
caption columns are detected from the schema, or named by `--image-column` / `--caption-column`
(the index records them, `remember_columns`). Other scalar columns (`key`, `url`...) become the
row's JSON metadata, as a webdataset sample's `.json` does.

Why parquet rows are read like tar members (index/tars.py) and not extracted: the index names
bytes in place, never copies a collection; a file whose size and mtime did not change is not
read again by the next build (index/plan.py keeps its records).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from index.files import fs_path

PARQUET_SUFFIX = ".parquet"
ROW_SEP = "#"
SIDECAR_CAP = 1 << 16
IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")
CAPTION_NAMES = ("caption", "text", "txt", "prompt", "captions", "title", "alt", "description")
_ROW = re.compile(r"^(.*\.parquet)#(\d+)$", re.IGNORECASE)
_hints: dict[str, tuple[str | None, str | None]] = {}   # collection root -> (image, caption) the user named


def is_parquet_name(name: str) -> bool:
    return name.lower().endswith(PARQUET_SUFFIX)


def row_name(rel: str, row: int) -> str:
    return f"{rel}{ROW_SEP}{row}"


def row_number(path: str) -> int:
    """The row a record path names (`a.parquet#12` -> 12); the file-level record `a.parquet#` is -1."""
    tail = path.rsplit(ROW_SEP, 1)[-1]
    return int(tail) if tail.isdigit() else -1


@dataclass(frozen=True)
class Columns:
    """Where a file keeps its images and captions: `image` (and `field`="bytes" for a struct), `caption`."""

    image: str
    field: str | None
    caption: str | None
    meta: tuple[str, ...] = ()


def detect_columns(schema, image: str | None = None, caption: str | None = None) -> Columns:
    """The image and caption columns of `schema` (or the ones named); ValueError with one sentence."""
    import pyarrow as pa

    def kind(t) -> str | None:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "binary"
        if pa.types.is_struct(t) and any(t.field(i).name == "bytes" and (pa.types.is_binary(t.field(i).type) or
                                         pa.types.is_large_binary(t.field(i).type)) for i in range(t.num_fields)):
            return "struct"
        return None

    fields = {f.name: f.type for f in schema}
    if image is not None:
        if image not in fields:
            raise ValueError(f"has no column '{image}' (--image-column); its columns are {_names(fields)}")
        if kind(fields[image]) is None:
            raise ValueError(f"column '{image}' holds {fields[image]}, not image bytes (binary, or a struct with "
                             "'bytes' as the datasets Image feature writes)")
    else:
        found = [name for name, t in fields.items() if kind(t)]
        if not found:
            raise ValueError(f"has no column of image bytes (columns: {_names(fields)}); name it with --image-column")
        named = [n for n in IMAGE_NAMES if n in found]
        if len(found) > 1 and not named:
            raise ValueError(f"has several columns of bytes ({_names({n: 0 for n in found})}); name the image "
                             "one with --image-column")
        image = named[0] if named else found[0]
    if caption is not None:
        if caption not in fields:
            raise ValueError(f"has no column '{caption}' (--caption-column); its columns are {_names(fields)}")
    else:
        texts = [n for n, t in fields.items() if pa.types.is_string(t) or pa.types.is_large_string(t)]
        caption = next((n for n in CAPTION_NAMES if n in texts), None)
    meta = tuple(n for n, t in fields.items() if n not in (image, caption) and _scalar(t))
    return Columns(image, "bytes" if kind(fields[image]) == "struct" else None, caption, meta)


def _scalar(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or \
        pa.types.is_floating(t) or pa.types.is_boolean(t)


def _names(fields: dict) -> str:
    names = list(fields)
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"


def remember_columns(root: str | Path, image: str | None, caption: str | None) -> None:
    """The columns an index was built with (`--image-column`...), for readers of its rows under `root`."""
    if image or caption:
        _hints[os.path.realpath(root)] = (image, caption)


def _hint(path: Path) -> tuple[str | None, str | None]:
    real = os.path.realpath(path)
    for root, named in _hints.items():
        if real.startswith(root.rstrip(os.sep) + os.sep):
            return named
    return None, None


def open_file(path: str | Path, image: str | None = None, caption: str | None = None):
    """(ParquetFile, Columns) of `path`; ValueError with the reason when it is no usable parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(fs_path(path))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"is not a readable parquet file ({_short(exc)}); nothing in it is indexed") from None
    return handle, detect_columns(handle.schema_arrow, image, caption)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("…" if len(text) > 160 else "")


@dataclass
class Group:
    """One row group as a scan sees it: its first row and the byte length of each image (None: no bytes)."""

    first: int
    lengths: list[int | None]


def iter_groups(handle, columns: Columns) -> Iterator[Group | str]:
    """Each row group's image lengths, reading the image column one row group at a time; a group
    that cannot be read ends the walk with a sentence (the rows before it are usable)."""
    import pyarrow.compute as pc

    first = 0
    meta = handle.metadata
    for g in range(handle.num_row_groups):
        rows = meta.row_group(g).num_rows
        try:
            col = _image_array(handle.read_row_group(g, columns=[columns.image]).column(0), columns)
            lengths = pc.binary_length(col).to_pylist()
        except Exception as exc:  # ArrowInvalid, OSError, a decompression error...: the damage starts here
            yield (f"is damaged from row group {g} on (rows {first:,} to {meta.num_rows - 1:,}: {_short(exc)}); "
                   f"the {first:,} rows before it are indexed")
            return
        yield Group(first, lengths)
        first += rows


def _image_array(col, columns: Columns):
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if columns.field:
        col = col.field(columns.field)
    return col


@dataclass(frozen=True)
class Row:
    image: bytes | None
    caption: str | None
    meta: str | None


def split_row_path(path: str | Path) -> tuple[Path, int] | None:
    """(file, row) when `path` names a row of a parquet file (`data/a.parquet#12`) that is not itself on disk."""
    match = _ROW.match(str(path))
    if match is None or os.path.lexists(fs_path(str(path))):
        return None
    file = Path(match.group(1))
    return (file, int(match.group(2))) if fs_path(file).is_file() else None


def read_row(file: str | Path, row: int, image: str | None = None, caption: str | None = None) -> Row:
    """Row `row` of `file`: its image bytes, caption and metadata (the row group read once, cached)."""
    file = fs_path(file)
    if image is None and caption is None:
        image, caption = _hint(file)
    info = os.stat(file)
    layout = _layout(str(file), info.st_size, info.st_mtime_ns, image, caption)
    starts, columns = layout
    if not 0 <= row < starts[-1]:
        raise FileNotFoundError(f"no row {row} in {file} (it has {starts[-1]:,})")
    import bisect

    g = bisect.bisect_right(starts, row) - 1
    table = _group(str(file), info.st_size, info.st_mtime_ns, g, columns)
    i = row - starts[g]
    data = table["image"][i]
    text = table["caption"][i] if table["caption"] is not None else None
    meta = {k: v[i] for k, v in table["meta"].items() if v[i] is not None}
    if columns.field and table["path"] is not None and table["path"][i]:
        meta.setdefault("image_path", table["path"][i])
    dumped = json.dumps(meta, ensure_ascii=False, default=str)[:SIDECAR_CAP] if meta else None
    return Row(data, text.strip()[:SIDECAR_CAP] if isinstance(text, str) else None, dumped)


@functools.lru_cache(maxsize=16)
def _layout(file: str, size: int, mtime_ns: int, image: str | None, caption: str | None):
    try:
        handle, columns = open_file(file, image, caption)
    except ValueError as exc:
        raise OSError(f"{file} {exc}") from None
    starts, total = [], 0
    for g in range(handle.num_row_groups):
        starts.append(total)
        total += handle.metadata.row_group(g).num_rows
    return starts + [total], columns


@functools.lru_cache(maxsize=2)
def _group(file: str, size: int, mtime_ns: int, g: int, columns: Columns) -> dict:
    """One row group's image, caption and metadata columns as Python lists (held for the next rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = [columns.image] + ([columns.caption] if columns.caption else []) + list(columns.meta)
    try:
        table = pq.ParquetFile(file).read_row_group(g, columns=wanted)
    except pa.ArrowException as exc:
        raise OSError(f"row group {g} of {file} cannot be read ({_short(exc)})") from None
    col = table.column(columns.image).combine_chunks()
    paths = None
    if columns.field:
        paths = col.field("path").to_pylist() if col.type.get_field_index("path") >= 0 else None
        col = col.field(columns.field)
    return {"image": col.to_pylist(), "path": paths,
            "caption": table.column(columns.caption).to_pylist() if columns.caption else None,
            "meta": {name: table.column(name).to_pylist() for name in columns.meta}}


def read_row_bytes(path: str | Path) -> bytes | None:
    """The image bytes of the row `path` names, or None when it names no parquet row."""
    found = split_row_path(path)
    if found is None:
        return None
    data = read_row(*found).image
    if data is None:
        raise FileNotFoundError(f"row {found[1]} of {found[0]} holds no image bytes")
    return data
