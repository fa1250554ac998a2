"""Winoground (Thrush et al., CVPR 2022) as published at huggingface.co/datasets/facebook/winoground.

Two layouts, both read as the dataset ships them:

1. `data/examples.jsonl` + `data/images/` (the unzipped `data/images.zip`). One object per line:
       {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
        "caption_0": "...", "caption_1": "...", "tag": "Noun", "secondary_tag": "",
        "num_main_preds": 1, "collapsed_tag": "Object"}
   `image_k` is a file stem under `images/` (`ex_0_img_0.png`); caption_k describes image_k.
   (Field names as in the dataset card and the loaders of ajd12342/why-winoground-hard
   `dataset/dataset.py` and the mteb Winoground task: images_column_names = image_0/image_1,
   texts_column_names = caption_0/caption_1.)
2. Parquet (the Hub's `refs/convert/parquet` export, `*.parquet`): the same columns, with
   `image_0`/`image_1` stored as the `datasets` Image feature, i.e. the Arrow struct
   {"bytes": binary, "path": string} (huggingface/datasets `features/image.py`,
   `pa_type = pa.struct({"bytes": pa.binary(), "path": pa.string()})`). Embedded bytes are
   written once to the cache, named by their SHA-256.

Each row is one 2x2 matrix item (image k matches caption k): eval reports Winoground's text,
image and group scores. The tag is `collapsed_tag` (Object / Relation / Both, the paper's
categories) for `winoground`, the fine-grained `tag` for `winoground-tag`, and `secondary_tag`
("none" when empty: Symbolic, Pragmatics, Series) for `winoground-secondary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from discff_cli.evaluation.datasets.common import (Draft, FileImage, image_from_bytes, need_object, need_str,
                                          row_error)
from discff_cli.errors import DiscffError
from discff_cli.evaluation.items import MATRIX

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NO_TAG = "none"


def find_layout(path: Path) -> tuple[str, list[Path]]:
    """("jsonl", [examples.jsonl]) or ("parquet", [files]) for what the user pointed at."""
    if path.is_file():
        if path.suffix == ".jsonl":
            return "jsonl", [path]
        if path.suffix == ".parquet":
            return "parquet", [path]
    elif path.is_dir():
        for candidate in (path / "data" / "examples.jsonl", path / "examples.jsonl"):
            if candidate.is_file():
                return "jsonl", [candidate]
        parquets = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if parquets:
            return "parquet", parquets
    raise DiscffError(f"'{path}' is not Winoground as published: expected data/examples.jsonl (with data/images/) "
                      "or the dataset's parquet files.")


def _tag(row: dict, field: str, file: Path, where: str) -> str:
    value = row.get(field)
    if field == "secondary_tag" and value in ("", None):
        return NO_TAG
    if not isinstance(value, str) or not value.strip():
        raise row_error(file, where, f'"{field}" must be a non-empty string (the tag this benchmark groups by)')
    return value


def _image_file(stem: str, images: Path) -> Path:
    """`ex_0_img_0` -> images/ex_0_img_0.png (or .jpg/.jpeg if that is what exists)."""
    if Path(stem).suffix.lower() in IMAGE_SUFFIXES:
        return images / stem
    candidates = [images / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _draft(row: dict, images: tuple, file: Path, where: str, tag_field: str, address: dict) -> Draft:
    texts = (need_str(row, "caption_0", file, where), need_str(row, "caption_1", file, where))
    source = {"benchmark": "winoground", **address, "id": row.get("id"),
              **{k: row.get(k) for k in ("tag", "secondary_tag", "collapsed_tag")}}
    return Draft(MATRIX, images, texts, None, _tag(row, tag_field, file, where), source)


def read_jsonl(file: Path, images: Path, tag_field: str) -> list[Draft]:
    from discff_cli.inputs import read_jsonl as read_lines

    drafts = []
    for line, row in read_lines(file, "Winoground file"):
        where = f"line {line}"
        row = need_object(row, file, where)
        pair = tuple(FileImage(_image_file(need_str(row, f"image_{k}", file, where), images)) for k in (0, 1))
        drafts.append(_draft(row, pair, file, where, tag_field, {"file": file.name, "line": line}))
    return drafts


def _embedded(value: Any, file: Path, where: str, column: str, cache: Path) -> FileImage:
    """A `datasets` Image cell: {"bytes": ..., "path": ...} (or raw bytes) -> a file."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if isinstance(data, (bytes, bytearray)) and data:
        return FileImage(image_from_bytes(bytes(data), cache))
    if isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"]:
        return FileImage(file.parent / value["path"])
    raise row_error(file, where, f'"{column}" holds neither image bytes nor a path')


def read_parquet(files: list[Path], cache: Path, tag_field: str) -> list[Draft]:
    """Row by row in batches, so the ~800 embedded images never sit in memory all at once."""
    import pyarrow.parquet as pq

    drafts = []
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on damaged files
            raise DiscffError(f"Winoground parquet '{file}' cannot be read ({exc}).") from None
        missing = {"image_0", "image_1", "caption_0", "caption_1", tag_field} - set(parquet.schema_arrow.names)
        if missing:
            raise DiscffError(f"{file} lacks the Winoground column(s) {', '.join(sorted(missing))}.")
        row_number = 0
        for batch in parquet.iter_batches(batch_size=32):
            for row in batch.to_pylist():
                where = f"row [{row_number}]"
                pair = tuple(_embedded(row.get(f"image_{k}"), file, where, f"image_{k}", cache) for k in (0, 1))
                drafts.append(_draft(row, pair, file, where, tag_field, {"file": file.name, "row": row_number}))
                row_number += 1
    return drafts


def read(path: Path, images: Path | None, cache: Path, tag_field: str = "collapsed_tag") -> tuple[list[Draft], str]:
    """Drafts of every row, and the image folder to name when images are missing."""
    layout, files = find_layout(path)
    if layout == "jsonl":
        folder = images or files[0].parent / "images"
        return read_jsonl(files[0], folder, tag_field), str(folder)
    return read_parquet(files, cache, tag_field), str(cache)
