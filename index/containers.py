"""Bytes stored inside another file: a member of a tar shard (`00001.tar/key.jpg`) or a row of a
parquet file (`part-0.parquet#12`). Every reader of an indexed path (decoding, hashing for
caches, the service's /images and thumbnails) asks here, so both kinds are read in place alike.
"""

from __future__ import annotations

from pathlib import Path

from index import parquet, tars


def read_member(path: str | Path) -> bytes | None:
    """The bytes `path` names inside a shard or a parquet file, or None when it is a plain path."""
    data = tars.read_member(path)
    return data if data is not None else parquet.read_row_bytes(path)


def names_member(path: str | Path) -> bool:
    """Whether `path` names bytes inside a shard or a parquet file that is on disk."""
    return tars.split_member_path(path) is not None or parquet.split_row_path(path) is not None


def holder(path: str | Path) -> Path:
    """The file on disk holding `path`'s bytes (its size and mtime tell whether they may have changed)."""
    found = parquet.split_row_path(path)
    return found[0] if found else tars.holder(path)


def media_type(data: bytes, name: str) -> str:
    """The MIME type of image bytes, from their signature (a parquet row has no file name to go by)."""
    import mimetypes

    for magic, kind in ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
                        (b"BM", "image/bmp")):
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
