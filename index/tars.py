"""Webdataset tar shards read in place: list the members, read one by its byte offset.

Why plain `tarfile` and not the `webdataset` library: webdataset streams a shard from its start
(right for training, which reads everything once), while an index needs *random access*: search,
`--rerank`, `serve` and `score` read one member among thousands. An uncompressed tar stores each
member contiguously, so the offset a listing records is all a later read needs (`os.pread`, no
extraction). Listing a shard reads only its 512-byte headers (benchmarks/decode.py measures it).

Webdataset's layout: a sample is the run of members sharing a *key* -- the member path up to the
first dot of its last component (`dir/a.b.jpg` has key `dir/a` and extension `b.jpg`); the
extension names the field. Every member whose extension ends in an image suffix is an image; the
`txt` and `json` members of its sample are its caption and metadata.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from index.files import IMAGE_EXTENSIONS, fs_path, open_regular, safe_name

SHARD_SUFFIX = ".tar"
COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
SIDECAR_CAP = 1 << 16          # a caption or JSON longer than 64 KiB is cut: the items table is no blob store
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass(frozen=True)
class Member:
    """One regular file in a shard: its name (safe UTF-8), where its bytes start, how many."""

    name: str
    offset: int
    size: int


@dataclass
class Listing:
    """A shard's members by name; `problems` are (member or "", reason) for what could not be used."""

    members: dict[str, Member] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def is_shard_name(name: str) -> bool:
    return name.lower().endswith(SHARD_SUFFIX)


def sample_key(name: str) -> tuple[str, str]:
    """(key, extension) as webdataset splits a member name; a name without a dot is its own key."""
    match = _KEY.match(name)
    return (match.group(1), match.group(2)) if match else (name, "")


def is_image_member(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_members(shard: str | Path) -> Listing:
    """Every regular member of `shard` with its data offset; what cannot be read is a problem, not an error.

    A member whose bytes run past the end of the file (a shard cut short by a failed copy) is a
    problem of that member; a header that does not parse ends the listing with one problem that
    says from which byte on the shard is unreadable -- the members before it are still usable.
    """
    listing = Listing()
    path = fs_path(shard)
    if path.name.lower().endswith(COMPRESSED):
        listing.problems.append(("", "a compressed shard cannot be read in place (members are read by their "
                                     "offset); decompress it to .tar"))
        return listing
    size = os.stat(path).st_size
    with open(path, "rb") as handle:
        try:
            archive = tarfile.open(fileobj=handle, mode="r:")
        except tarfile.TarError as exc:
            listing.problems.append(("", f"not a tar archive ({exc})"))
            return listing
        _read_headers(archive, size, listing)
    return listing


def _read_headers(archive: tarfile.TarFile, size: int, listing: Listing) -> None:
    while True:
        try:
            info = archive.next()
        except (tarfile.TarError, EOFError, OSError) as exc:
            listing.problems.append(("", f"unreadable from byte {archive.offset:,} on ({exc}); "
                                         f"the {len(listing.members)} members before it are indexed"))
            return
        if info is None:
            break
        name = _member_name(info.name)
        if not info.isfile() or name is None:
            continue
        if info.offset_data + info.size > size:
            listing.problems.append((name, f"cut short: the shard ends at byte {size:,}, this member needs "
                                           f"{info.offset_data + info.size:,}"))
            return
        listing.members[name] = Member(name, info.offset_data, info.size)  # a later copy replaces an earlier one
    end = archive.offset
    if size - end > 2 * tarfile.BLOCKSIZE and _has_data_after(archive, end, size):
        listing.problems.append(("", f"unreadable from byte {end:,} on (not a tar header); "
                                     f"the {len(listing.members)} members before it are indexed"))


def _has_data_after(archive: tarfile.TarFile, end: int, size: int) -> bool:
    """Whether bytes other than the zero padding follow where tarfile stopped (a damaged header)."""
    archive.fileobj.seek(end)
    tail = archive.fileobj.read(min(size - end, 1 << 20))
    return tail.strip(b"\0") != b""


def _member_name(raw: str) -> str | None:
    """A member's name as the index records it: `./a.jpg` (tar run in the folder) is `a.jpg`;
    a name that climbs out (`../x`) or is empty names no member."""
    name = posixpath.normpath(raw).lstrip("/")
    if name in ("", ".") or name == ".." or name.startswith("../"):
        return None
    return safe_name(name)


def sidecars(listing: Listing, image: str) -> dict[str, Member]:
    """The `txt` and `json` members of the image's sample: `a.b.jpg` -> `a.b.txt`, else `a.txt`."""
    stem = image[: -len(os.path.splitext(image)[1])]
    key, _ = sample_key(image)
    found = {}
    for ext in ("txt", "json"):
        member = listing.members.get(f"{stem}.{ext}") or listing.members.get(f"{key}.{ext}")
        if member is not None:
            found[ext] = member
    return found


def read_range(path: str | Path, offset: int, size: int) -> bytes:
    """`size` bytes of the file at `offset` (a member's data), refusing a short read as truncation."""
    fd = open_regular(path)
    try:
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(data) != size:
        raise EOFError(f"the shard ends {size - len(data):,} bytes before this member does")
    return data


def read_text(path: str | Path, member: Member) -> str:
    """A caption or JSON member as text (capped at SIDECAR_CAP bytes, undecodable bytes replaced)."""
    data = read_range(path, member.offset, min(member.size, SIDECAR_CAP))
    return data.decode("utf-8", "replace").strip()


def split_member_path(path: str | Path) -> tuple[Path, str] | None:
    """(shard, member) when `path` names a member inside a tar shard (`shards/00001.tar/key.jpg`).

    Only when the path itself is not on disk: a real file or folder always wins.
    """
    text = str(path)
    if SHARD_SUFFIX + "/" not in text.lower() or os.path.lexists(fs_path(text)):
        return None
    parts = Path(text).parts
    for i in range(len(parts) - 1, 0, -1):
        if is_shard_name(parts[i - 1]):
            shard = Path(*parts[:i])
            if fs_path(shard).is_file():
                return shard, "/".join(parts[i:])
    return None


def find_member(shard: Path, name: str) -> Member:
    """The member `name` of `shard` (its listing cached by the shard's size and mtime)."""
    info = os.stat(fs_path(shard))
    member = _cached_listing(str(shard), info.st_size, info.st_mtime_ns).members.get(name)
    if member is None:
        raise FileNotFoundError(f"no member '{name}' in {shard}")
    return member


@functools.lru_cache(maxsize=16)
def _cached_listing(shard: str, size: int, mtime_ns: int) -> Listing:
    return list_members(shard)


def read_member(path: str | Path) -> bytes | None:
    """The bytes of the member `path` names (see `split_member_path`), or None when it names no member."""
    found = split_member_path(path)
    if found is None:
        return None
    shard, name = found
    member = find_member(shard, name)
    return read_range(shard, member.offset, member.size)


def holder(path: str | Path) -> Path:
    """The file on disk that holds `path`'s bytes: the path itself, or the shard of a member path
    (its size and mtime then tell whether the member may have changed)."""
    found = split_member_path(path)
    return fs_path(found[0] if found else path)
