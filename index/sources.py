"""What `index build SOURCE` names: a folder, or shards (webdataset .tar, .parquet) as a pattern or a list.

    images/                         a folder: loose images, .tar shards and .parquet files in it, recursively
    shards/{00000..00099}.tar       a brace pattern (webdataset's and img2dataset's spelling), or a glob
    data/*.parquet                  parquet files (index/parquet.py: HF datasets or img2dataset layout)
    shards/00007.tar                one shard (or one .parquet file)
    shards.txt                      a list file: one shard path per line, relative to the list file

The index's root is the folder, or the deepest folder holding every shard named; items are
recorded relative to it (`00007.tar/000070001.jpg`), so search results are paths a user can
pass to `score` and the service can serve: readers open members through index/tars.py.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from index.errors import IndexError_
from index.parquet import is_parquet_name
from index.tars import is_shard_name


@dataclass(frozen=True)
class Collection:
    """The root folder of a collection and, for a pattern or list, the shards it consists of."""

    root: Path
    shards: list[Path] | None
    source: str


def resolve_source(text: str) -> Collection:
    """The collection `text` names, or IndexError_ with one sentence saying what it should be."""
    path = Path(text).expanduser()
    if path.is_dir():
        root = path.resolve()
        return Collection(root, None, str(root))
    if "://" in text or text.startswith("pipe:"):
        raise IndexError_(f"'{text}' is a remote shard; shards are read in place, so copy them to a local "
                          "folder first.")
    if any(ch in text for ch in "{*?["):
        shards = _expand(text)
    elif path.is_file() and (is_shard_name(path.name) or is_parquet_name(path.name)):
        shards = [path]
    elif path.is_file():
        shards = _read_list(path)
    else:
        raise IndexError_(f"'{text}' is not a folder, a tar shard or parquet file, a pattern such as "
                          "'shards/{00000..00009}.tar' or 'data/*.parquet', or a list file of shards.")
    if not any(p.exists() for p in shards):  # some missing: each is recorded as not found; all: a typo
        raise IndexError_(f"'{text}' names no shard that exists ({shards[0]}{', ...' if len(shards) > 1 else ''}).")
    # folders resolved (the root is compared across builds), the shard names kept as written
    shards = sorted({Path(os.path.realpath(Path(p).parent)) / Path(p).name for p in shards})
    root = Path(os.path.commonpath([str(p.parent) for p in shards]))
    return Collection(root, shards, text)


def _expand(pattern: str) -> list[Path]:
    """Brace ranges and lists as webdataset expands them, then shell globs; no match is an error."""
    from braceexpand import braceexpand

    found: list[Path] = []
    for name in braceexpand(pattern):
        matches = glob.glob(name) if any(ch in name for ch in "*?[") else [name]
        found += [Path(m) for m in sorted(matches)]
    if not found:
        raise IndexError_(f"The pattern '{pattern}' names no shard.")
    return found


def _read_list(path: Path) -> list[Path]:
    """The shards a list file names (blank lines and `#` comments skipped), relative to its folder."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexError_(f"The shard list '{path}' cannot be read as text ({exc}).") from None
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not names:
        raise IndexError_(f"The shard list '{path}' names no shard.")
    for name in names:
        if "://" in name or name.startswith("pipe:"):
            raise IndexError_(f"The shard list '{path}' names a remote shard ({name}); copy the shards to a "
                              "local folder first.")
    return [path.parent / name for name in names]
