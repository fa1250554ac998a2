"""Thumbnails for the page, made once and cached under the index directory (`<index>/thumbs/`).

The cache key is the file's relative path, size and mtime, not its index id: ids are rows, and a
rebuild can give a row to another image, while a changed file gets a new key by itself.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

from index.imageio import open_rgb
from index.containers import holder
from index.store import atomic_write_bytes

log = logging.getLogger("discff.serve")


class ThumbCache:
    """JPEG thumbnails no larger than `size` pixels a side, on disk when the index folder is writable."""

    def __init__(self, directory: Path, size: int = 256) -> None:
        self.directory, self.size = directory, size
        self._writable = True

    def get(self, source: Path, root: Path) -> bytes:
        """The thumbnail of `source` (an indexed file or shard member under `root`); raises ImageDecodeError
        or OSError. A member's key carries its shard's size and mtime."""
        stat = holder(source).stat()
        key = hashlib.blake2b(f"{source.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode(),
                              digest_size=16).hexdigest()
        cached = self.directory / key[:2] / f"{key}.jpg"
        if cached.is_file():
            return cached.read_bytes()
        data = self._make(source)
        if self._writable:
            try:
                atomic_write_bytes(cached, data)
            except OSError as exc:  # a read-only index still serves thumbnails, made each time
                self._writable = False
                log.warning("thumbnails are not cached: cannot write under %s (%s)", self.directory, exc)
        return data

    def _make(self, source: Path) -> bytes:
        image = open_rgb(source)
        image.thumbnail((self.size, self.size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()
