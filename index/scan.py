"""Find the image files under a folder and fingerprint their contents."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from index.imageio import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class FileEntry:
    """A file as seen by a scan: path relative to the root (POSIX), size and mtime in ns."""

    rel: str
    size: int
    mtime_ns: int


def scan_images(root: Path) -> list[FileEntry]:
    """All files with an image extension under `root`, recursively, sorted by relative path.

    Hidden folders (such as a `.discff` index kept inside the collection) are not entered.
    """
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            try:
                stat = full.stat()
            except OSError:
                continue
            entries.append(FileEntry(full.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(entries, key=lambda e: e.rel)


def content_hash(path: Path) -> str:
    """BLAKE2b-128 of the bytes: identifies a file across renames and touches."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_many(root: Path, rels: list[str], threads: int = 8) -> dict[str, str | None]:
    """Hash files in parallel threads (hashlib releases the GIL); unreadable files map to None."""

    def one(rel: str) -> str | None:
        try:
            return content_hash(root / rel)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip(rels, pool.map(one, rels)))
