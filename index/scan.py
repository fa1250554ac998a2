"""Find the image files under a folder and fingerprint their contents.

The scan never reads a byte of a file before it knows the file is a regular file (a FIFO or a
link to /dev/zero named like an image would otherwise hang the build), follows linked folders
once each (a loop is recorded, not walked forever), and records every entry it does not index
with the reason. A name that is not valid UTF-8 is indexed under a safe, reversible spelling
(`safe_name`), since the items table stores UTF-8 text.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat as stat_
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from index.imageio import IMAGE_EXTENSIONS

_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


@dataclass(frozen=True)
class FileEntry:
    """A file as seen by a scan: path relative to the root (POSIX, safe UTF-8), size and mtime in ns."""

    rel: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    """What a scan found: files to index, entries it could not index (path, reason), renamed names."""

    entries: list[FileEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)   # indexed under the safe spelling of an undecodable name


def safe_name(name: str) -> str:
    """A name as valid UTF-8: bytes that are not UTF-8 (surrogate-escaped by os) become `\\xNN`."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def fs_path(path: str | Path) -> Path:
    """The file a (possibly safe-spelled) path names: undo `safe_name` when the spelled path does not exist."""
    path = Path(path)
    text = str(path)
    if "\\x" not in text or os.path.lexists(text):
        return path
    raw = _ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    return Path(raw)


def _kind(mode: int) -> str:
    for test, name in ((stat_.S_ISFIFO, "a FIFO"), (stat_.S_ISCHR, "a character device"),
                       (stat_.S_ISBLK, "a block device"), (stat_.S_ISSOCK, "a socket"), (stat_.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _stat_reason(exc: OSError, is_link: bool) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT and is_link:
        return "broken symlink (its target does not exist)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot be read ({exc.strerror or exc})"


def scan_folder(root: Path) -> ScanResult:
    """All files with an image extension under `root`, recursively, sorted by relative path.

    Hidden folders (such as a `.discff` index kept inside the collection) are not entered; files
    without an image extension are not images and are not reported.
    """
    result = ScanResult()
    seen_dirs = {os.path.realpath(root)}

    def unreadable(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(root).as_posix() if exc.filename else "."
        result.skipped.append((safe_name(rel) + "/", f"folder not read: {_stat_reason(exc, False)}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                real = os.path.realpath(full)
                rel = safe_name(Path(full).relative_to(root).as_posix()) + "/"
                if real in _ancestors(dirpath):
                    result.skipped.append((rel, "symlink loop (links to a folder that contains it)"))
                    continue
                if real in seen_dirs:
                    result.skipped.append((rel, "symlink to a folder already scanned"))
                    continue
                seen_dirs.add(real)
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            _scan_file(root, Path(dirpath) / name, result)
    result.entries.sort(key=lambda e: e.rel)
    result.skipped.sort()
    return result


def _ancestors(dirpath: str) -> list[str]:
    real = os.path.realpath(dirpath)
    return [real] + [str(p) for p in Path(real).parents]


def _scan_file(root: Path, full: Path, result: ScanResult) -> None:
    raw_rel = full.relative_to(root).as_posix()
    rel = safe_name(raw_rel)
    if rel != raw_rel:
        result.renamed.append(rel)
    is_link = full.is_symlink()
    try:
        info = full.stat()
    except OSError as exc:
        result.skipped.append((rel, _stat_reason(exc, is_link)))
        return
    if not stat_.S_ISREG(info.st_mode):
        result.skipped.append((rel, f"{_kind(info.st_mode)}, not an image file"))
        return
    result.entries.append(FileEntry(rel, info.st_size, info.st_mtime_ns))


def scan_images(root: Path) -> list[FileEntry]:
    """The indexable files under `root` (see `scan_folder` for what is skipped and why)."""
    return scan_folder(root).entries


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of `path`, refusing anything but a regular file without blocking on it."""
    fd = os.open(fs_path(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat_.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{_kind(mode)}, not an image file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def content_hash(path: str | Path) -> str:
    """BLAKE2b-128 of the bytes: identifies a file across renames and touches."""
    digest = hashlib.blake2b(digest_size=16)
    with os.fdopen(open_regular(path), "rb") as handle:
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
