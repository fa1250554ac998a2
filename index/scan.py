"""Find the images of a collection -- loose files and webdataset tar shards -- in sorted path order.

The scan is a generator: it yields one `FileEntry` (or `Skipped`) at a time, in the order of
Python's string comparison of the relative paths, which is the order the items table is written
in. Why: the builder matches the scan against the previous generation as a sorted merge of two
streams (index/plan.py), so a build's memory does not grow with the number of files. Only one
folder listing (or one shard's member listing) is held at a time.

The scan never reads a byte of a file before it knows the file is a regular file (a FIFO or a
link to /dev/zero named like an image would otherwise hang the build), follows linked folders
once each (a loop is recorded, not walked forever), and records every entry it does not index
with the reason. A name that is not valid UTF-8 is indexed under a safe, reversible spelling
(`safe_name`), since the items table stores UTF-8 text. A `.tar` file is a shard: its image
members are entries named `SHARD/MEMBER` (read in place by offset, never extracted). A `.parquet`
file is a shard of rows: its images are entries named `FILE.parquet#ROW` (index/parquet.py), in
row order, read one row group at a time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from index import parquet
from index.files import IMAGE_EXTENSIONS, file_kind, open_regular, safe_name
from index.tars import COMPRESSED, Member, is_image_member, is_shard_name, list_members, read_range, read_text, sidecars


@dataclass(frozen=True)
class FileEntry:
    """An image as seen by a scan: path relative to the root (POSIX, safe UTF-8), size and mtime in ns.

    A member of a tar shard also names the shard (relative path), where its bytes start, and its
    caption/JSON members as (extension, offset, size); its mtime is the shard's. A parquet row names
    its file as `shard` and its row number as `offset` (caption and metadata are columns of the
    row). A loose file's sidecars are files beside it (`a.jpg` -> `a.txt`), with offset -1, and its
    mtime is the latest of the image's and its sidecars' (editing only `a.txt` is a change).
    """

    rel: str
    size: int
    mtime_ns: int
    shard: str | None = None
    offset: int = -1
    sidecars: tuple[tuple[str, int, int], ...] = ()
    shard_size: int = -1


@dataclass(frozen=True)
class Shard:
    """A tar shard as a scan meets it: its size and mtime now, and its image members when asked.

    Why lazy: listing a shard reads a header per member; a build that finds the shard as the
    previous generation recorded it keeps those records and never lists it (index/plan.py).
    """

    rel: str
    size: int
    mtime_ns: int
    path: Path
    columns: tuple[str | None, str | None] | None = None   # a parquet file: the (image, caption) columns named

    @property
    def is_parquet(self) -> bool:
        return self.columns is not None

    @property
    def prefix(self) -> str:
        """What every record path of this shard starts with (`a.tar/`, `a.parquet#`)."""
        return self.rel + (parquet.ROW_SEP if self.is_parquet else "/")

    def members(self) -> Iterator["FileEntry | Skipped"]:
        return _parquet_rows(self) if self.is_parquet else _shard_members(self)


@dataclass(frozen=True)
class Skipped:
    """An entry the scan does not index, with the reason."""

    rel: str
    reason: str


@dataclass
class ScanResult:
    """What a scan found, collected: files to index, entries it could not index (path, reason), renamed names."""

    entries: list[FileEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)   # indexed under the safe spelling of an undecodable name


def _stat_reason(exc: OSError, is_link: bool) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT and is_link:
        return "broken symlink (its target does not exist)"
    if exc.errno == errno.ENOENT:
        return "not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot be read ({exc.strerror or exc})"


def scan_folder(root: Path, shards: list[Path] | None = None,
                columns: tuple[str | None, str | None] = (None, None)) -> ScanResult:
    """`iter_scan` collected into lists (for small collections and tests)."""
    result = ScanResult()
    for found in iter_scan(root, shards, result.renamed, columns):
        for item in found.members() if isinstance(found, Shard) else (found,):
            if isinstance(item, Skipped):
                result.skipped.append((item.rel, item.reason))
            else:
                result.entries.append(item)
    return result


def scan_images(root: Path) -> list[FileEntry]:
    """The indexable files under `root` (see `iter_scan` for what is skipped and why)."""
    return scan_folder(root).entries


def iter_scan(root: Path, shards: list[Path] | None = None, renamed: list[str] | None = None,
              columns: tuple[str | None, str | None] = (None, None)) -> Iterator[FileEntry | Skipped | Shard]:
    """Every image under `root` (or in the listed `shards` only), sorted by relative path.

    Hidden folders (such as a `.discff` index kept inside the collection) are not entered; files
    without an image extension are not images and are not reported. A tar shard is yielded as a
    `Shard` whose members the consumer lists (or not). `renamed` collects the names indexed
    under a safe spelling. `columns`: the (image, caption) columns of parquet files, None to detect.
    """
    renamed = renamed if renamed is not None else []
    if shards is not None:
        keyed = sorted((safe_name(p.relative_to(root).as_posix()) + _sep(p.name), p) for p in shards)
        for key, full in keyed:
            yield from _scan_shard(key[:-1], full, columns if parquet.is_parquet_name(full.name) else None)
        return
    yield from _walk(Path(root), "", {os.path.realpath(root)}, renamed, columns)


def _sep(name: str) -> str:
    """What follows a name in the paths under it: a folder or tar shard "/", a parquet file "#"."""
    return parquet.ROW_SEP if parquet.is_parquet_name(name) else "/"


def _walk(root: Path, rel_dir: str, seen_dirs: set[str], renamed: list[str],
          columns: tuple = (None, None)) -> Iterator[FileEntry | Skipped | Shard]:
    full_dir = root / rel_dir if rel_dir else root
    try:
        with os.scandir(full_dir) as listing:
            children = [(entry.name, _is_dir(entry)) for entry in listing]
    except OSError as exc:
        yield Skipped(safe_name(rel_dir) + "/" if rel_dir else "./", f"folder not read: {_stat_reason(exc, False)}")
        return
    names = {name for name, _ in children}
    # a folder sorts as "name/": then the walk's order is exactly the sorted order of the full paths
    # (a parquet file as "name#": its rows follow it in the same order)
    keyed = sorted((safe_name(name) + ("/" if is_dir or is_shard_name(name) else
                                       parquet.ROW_SEP if parquet.is_parquet_name(name) else ""), name, is_dir)
                   for name, is_dir in children)
    for key, name, is_dir in keyed:
        rel = f"{rel_dir}/{name}" if rel_dir else name
        if is_dir:
            if not name.startswith("."):
                yield from _enter(root, rel, seen_dirs, renamed, columns)
        elif is_shard_name(name) or name.lower().endswith(COMPRESSED):
            yield from _scan_shard_file(root, rel, renamed)
        elif parquet.is_parquet_name(name):
            yield from _scan_shard_file(root, rel, renamed, columns)
        elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            yield from _scan_file(root, rel, names, renamed)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _enter(root: Path, rel: str, seen_dirs: set[str], renamed: list[str],
           columns: tuple = (None, None)) -> Iterator[FileEntry | Skipped | Shard]:
    """Walk a sub-folder, refusing a linked folder that loops or was already scanned."""
    full = root / rel
    if os.path.islink(full):
        real = os.path.realpath(full)
        if real in _ancestors(str(full.parent)):
            yield Skipped(safe_name(rel) + "/", "symlink loop (links to a folder that contains it)")
            return
        if real in seen_dirs:
            yield Skipped(safe_name(rel) + "/", "symlink to a folder already scanned")
            return
        seen_dirs.add(real)
    yield from _walk(root, rel, seen_dirs, renamed, columns)


def _ancestors(dirpath: str) -> list[str]:
    real = os.path.realpath(dirpath)
    return [real] + [str(p) for p in Path(real).parents]


def _regular_stat(root: Path, raw_rel: str, rel: str) -> os.stat_result | Skipped:
    full = root / raw_rel
    is_link = full.is_symlink()
    try:
        info = full.stat()
    except OSError as exc:
        return Skipped(rel, _stat_reason(exc, is_link))
    if not stat_.S_ISREG(info.st_mode):
        return Skipped(rel, f"{file_kind(info.st_mode)}, not an image file")
    return info


def _scan_file(root: Path, raw_rel: str, names: set[str], renamed: list[str]) -> Iterator[FileEntry | Skipped]:
    rel = safe_name(raw_rel)
    if rel != raw_rel:
        renamed.append(rel)
    info = _regular_stat(root, raw_rel, rel)
    if isinstance(info, Skipped):
        yield info
        return
    stem = os.path.splitext(os.path.basename(raw_rel))[0]
    beside = tuple((ext, -1, -1) for ext in ("txt", "json") if f"{stem}.{ext}" in names)
    mtime = info.st_mtime_ns
    for ext, _, _ in beside:  # a caption edited beside an unchanged image changes the entry
        try:
            mtime = max(mtime, os.stat(root / (os.path.splitext(raw_rel)[0] + "." + ext)).st_mtime_ns)
        except OSError:
            pass
    yield FileEntry(rel, info.st_size, mtime, sidecars=beside)


def _scan_shard_file(root: Path, raw_rel: str, renamed: list[str],
                     columns: tuple | None = None) -> Iterator[Shard | Skipped]:
    rel = safe_name(raw_rel)
    if rel != raw_rel:
        renamed.append(rel)
    yield from _scan_shard(rel, root / raw_rel, columns)


def _scan_shard(rel: str, full: Path, columns: tuple | None = None) -> Iterator[Shard | Skipped]:
    """The shard (columns given: a parquet file), once it is known to be a regular file (its members
    are listed when asked)."""
    info = _regular_stat(full.parent, full.name, rel + ("/" if columns is None else parquet.ROW_SEP))
    yield info if isinstance(info, Skipped) else Shard(rel, info.st_size, info.st_mtime_ns, full, columns)


def _shard_members(shard: Shard) -> Iterator[FileEntry | Skipped]:
    """The image members of one shard in name order; what cannot be read is recorded under the shard."""
    rel = shard.rel
    try:
        listing = list_members(shard.path)
    except OSError as exc:
        yield Skipped(rel + "/", f"shard {_stat_reason(exc, False)}")
        return
    problems = dict(listing.problems)
    if "" in problems:
        yield Skipped(rel + "/", problems.pop(""))
    members = sorted(set(listing.members) | {name for name in problems if is_image_member(name)})
    for name in members:
        if name in problems:
            yield Skipped(f"{rel}/{name}", problems[name])
        elif is_image_member(name):
            member = listing.members[name]
            found = tuple((ext, m.offset, m.size) for ext, m in sidecars(listing, name).items())
            yield FileEntry(f"{rel}/{name}", member.size, shard.mtime_ns, rel, member.offset, found, shard.size)


def _parquet_rows(shard: Shard) -> Iterator[FileEntry | Skipped]:
    """The rows of one parquet file in row order, its image column read one row group at a time;
    what cannot be used is recorded (a row without bytes under its row, damage under `FILE#`)."""
    prefix = shard.prefix
    try:
        handle, columns = parquet.open_file(shard.path, *shard.columns)
    except ValueError as exc:
        yield Skipped(prefix, str(exc))
        return
    for group in parquet.iter_groups(handle, columns):
        if isinstance(group, str):
            yield Skipped(prefix, group)
            return
        for i, length in enumerate(group.lengths):
            rel = parquet.row_name(shard.rel, group.first + i)
            if length is None:
                yield Skipped(rel, "no image bytes in this row (null)")
            else:
                yield FileEntry(rel, length, shard.mtime_ns, shard.rel, group.first + i, (), shard.size)


def is_parquet_entry(entry: FileEntry) -> bool:
    return entry.shard is not None and parquet.is_parquet_name(entry.shard)


def entry_bytes(root: Path, entry: FileEntry) -> bytes:
    """The bytes of an entry: a loose file, a member read by its offset in the shard, a parquet row."""
    if is_parquet_entry(entry):
        data = parquet.read_row(root / entry.shard, entry.offset).image
        if data is None:
            raise EOFError("no image bytes in this row (null)")
        return data
    if entry.shard is not None:
        return read_range(root / entry.shard, entry.offset, entry.size)
    with os.fdopen(open_regular(root / entry.rel), "rb") as handle:
        return handle.read()


def digest(data: bytes) -> str:
    """BLAKE2b-128 of the bytes: identifies an image across renames, touches and re-packed shards."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def content_hash(path: str | Path) -> str:
    """BLAKE2b-128 of a file's bytes, streamed."""
    hasher = hashlib.blake2b(digest_size=16)
    with os.fdopen(open_regular(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def entry_hash(root: Path, entry: FileEntry) -> str:
    if entry.shard is not None:
        return digest(entry_bytes(root, entry))
    return content_hash(root / entry.rel)


def hash_many(root: Path, entries: Iterable[FileEntry], threads: int = 8) -> dict[str, str | None]:
    """Hash entries in parallel threads (hashlib releases the GIL); unreadable ones map to None."""

    def one(entry: FileEntry) -> str | None:
        try:
            return entry_hash(root, entry)
        except (OSError, EOFError):
            return None

    entries = list(entries)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip((e.rel for e in entries), pool.map(one, entries)))


def read_sidecars(root: Path, entry: FileEntry) -> dict[str, str | None]:
    """The caption (`txt`) and metadata (`json`) beside an image, as text; missing or unreadable: None."""
    found: dict[str, str | None] = {"caption": None, "json": None}
    if is_parquet_entry(entry):
        try:
            row = parquet.read_row(root / entry.shard, entry.offset)
        except (OSError, EOFError):
            return found
        return {"caption": row.caption, "json": row.meta}
    for ext, offset, size in entry.sidecars:
        key = "caption" if ext == "txt" else "json"
        try:
            if entry.shard is not None:
                found[key] = read_text(root / entry.shard, Member("", offset, size))
            else:
                beside = root / (os.path.splitext(entry.rel)[0] + "." + ext)
                found[key] = read_text(beside, Member("", 0, os.stat(beside).st_size))
        except (OSError, EOFError):
            continue
    return found

