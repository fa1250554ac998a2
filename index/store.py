"""The index directory on disk: manifest, items table, embeddings, FAISS file, lock, resume chunks.

Layout (one generation of data files is live at a time; the manifest names them):

    manifest.json            format version, CLIP spec + fingerprint, counts, FAISS type/params/recall,
                             and each data file's size and BLAKE2b (`checks`)
    manifest.backup.json     a copy of the last published manifest (repairs a damaged manifest.json)
    items-<gen>.parquet      one row per file seen, sorted by path: path, size, mtime_ns, hash, width, height,
                             status, error, row, and for a tar member its shard and offset; caption and json
                             hold the sample's txt/json beside the image (index/records.py)
    embeddings-<gen>.npy     float16 [count, dim], row i = item with row == i; above SHARD_ROWS (1M)
    embeddings-<gen>-<k>.npy rows, further shards of the same matrix (index/shards.py), named in the
                             manifest as "embeddings.<k>"
    faiss-<gen>.index        the FAISS index over the same rows
    lock                     held (flock) by the one writer
    pending/chunk-*.npz      embedded batches of an unfinished build (resume)

A build writes the new generation's files under temporary names, renames them into place and
then replaces the manifest: a reader sees either the old index or the new one, never a mixture.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np

from index.errors import IndexLocked, IndexMissing
from index.records import ITEM_COLUMNS, ITEM_SCHEMA, NEW_COLUMNS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BACKUP = "manifest.backup.json"   # a copy of the last published manifest, for repairing a damaged one


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it over `path` (for writers that want a filename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Items:
    """Column arrays of the items table (plain numpy/python, no pandas dependency)."""

    columns: dict[str, list]

    @classmethod
    def empty(cls) -> "Items":
        return cls({c: [] for c in ITEM_COLUMNS})

    @classmethod
    def from_records(cls, records: list[dict]) -> "Items":
        return cls({c: [r.get(c) for r in records] for c in ITEM_COLUMNS})

    def records(self) -> list[dict]:
        n = len(self)
        return [{c: self.columns[c][i] for c in ITEM_COLUMNS} for i in range(n)]

    def __len__(self) -> int:
        return len(self.columns["path"])


class IndexDir:
    """Reads and writes one index directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def pending(self) -> Path:
        return self.path / "pending"

    def exists(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, validated: a binary, truncated or incomplete one raises IndexDamaged."""
        from index.integrity import Problem, damaged, manifest_problems

        try:
            manifest = json.loads((self.path / MANIFEST).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise IndexMissing(
                f"No index at '{self.path}'; build one with `discff index build DIR` (or pass --index)."
            ) from None
        except IsADirectoryError:
            raise damaged(self.path, [Problem(MANIFEST, "is a directory")]) from None
        except PermissionError:
            raise IndexMissing(f"No permission to read '{self.path / MANIFEST}'.") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
            raise damaged(self.path, [Problem(MANIFEST, "is not valid JSON")]) from None
        if isinstance(manifest, dict) and "format_version" in manifest and manifest["format_version"] != FORMAT_VERSION:
            raise IndexMissing(
                f"The index at '{self.path}' has format version {manifest.get('format_version')}, this discff reads "
                f"{FORMAT_VERSION}; rebuild it with `discff index build DIR --rebuild`."
            )
        problems = manifest_problems(manifest)
        if problems:
            raise damaged(self.path, [Problem(MANIFEST, "; ".join(problems))])
        return manifest

    def check(self, manifest: dict[str, Any], deep: bool = False) -> None:
        """Raise IndexDamaged when a data file is missing or differs from the manifest's record."""
        from index.integrity import check_files, damaged

        problems = check_files(self.path, manifest, deep)
        if problems:
            raise damaged(self.path, problems, manifest["root"])

    def _damaged(self, manifest: dict[str, Any], key: str, what: str):
        from index.integrity import Problem, damaged

        return damaged(self.path, [Problem(manifest["files"][key], what)], manifest["root"])

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Publish `manifest`, then keep a copy: if manifest.json is damaged later, the copy names the
        generation and its checksums, so a repair can reuse that generation's files once they verify."""
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        atomic_write_bytes(self.path / MANIFEST, data)
        try:
            atomic_write_bytes(self.path / BACKUP, data)
        except OSError:
            (self.path / BACKUP).unlink(missing_ok=True)  # a stale copy must not outlive its generation

    def read_backup_manifest(self) -> dict[str, Any] | None:
        """The copy of the last published manifest when it is valid and every file it names verifies in depth."""
        from index.integrity import check_files, manifest_problems

        try:
            manifest = json.loads((self.path / BACKUP).read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if manifest_problems(manifest) or manifest.get("format_version") != FORMAT_VERSION \
                or not isinstance(manifest.get("checks"), dict):
            return None
        return None if check_files(self.path, manifest, deep=True) else manifest

    def file(self, manifest: dict[str, Any], key: str) -> Path:
        return self.path / manifest["files"][key]

    def read_items(self, manifest: dict[str, Any]) -> Items:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.file(manifest, "items"))
            n = table.num_rows  # a table written before shards has no shard/offset/caption/json columns
            items = Items({c: table.column(c).to_pylist() if c in table.column_names or c not in NEW_COLUMNS
                           else [None] * n for c in ITEM_COLUMNS})
        except FileNotFoundError:
            raise self._damaged(manifest, "items", "is missing") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, KeyError... for a damaged file
            raise self._damaged(manifest, "items", f"cannot be read as the items table ({_first_line(exc)})") from None
        rows = sorted(r for r in items.columns["row"] if isinstance(r, int) and r >= 0)
        if rows != list(range(manifest["count"])):
            raise self._damaged(manifest, "items", f"does not list rows 0..{manifest['count'] - 1} of the index")
        return items

    def read_paths(self, manifest: dict[str, Any]) -> "RelPaths":
        """The relative path of each embedding row, kept as one Arrow string array: a search needs
        only this column, and 10M paths as Arrow cost a fraction of 10M Python records."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.file(manifest, "items"), columns=["path", "row"])
        except FileNotFoundError:
            raise self._damaged(manifest, "items", "is missing") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, KeyError... for a damaged file
            raise self._damaged(manifest, "items", f"cannot be read as the items table ({_first_line(exc)})") from None
        rows = table.column("row").fill_null(-1).to_numpy()
        ok = np.flatnonzero(rows >= 0)
        order = ok[np.argsort(rows[ok], kind="stable")]
        if not np.array_equal(rows[order], np.arange(manifest["count"])):
            raise self._damaged(manifest, "items", f"does not list rows 0..{manifest['count'] - 1} of the index")
        paths = pc.take(table.column("path"), pa.array(order)).combine_chunks()
        return RelPaths(paths)

    def verify_items(self, manifest: dict[str, Any]) -> None:
        """Raise IndexDamaged unless the items table parses and lists rows 0..count-1, streamed a batch at
        a time (a build reads it this way so its memory does not grow with the collection). Builders
        give rows in table order, so each row must be the next one."""
        from index.records import iter_items

        expected, in_order = 0, True
        try:
            for rec in iter_items(self.file(manifest, "items"), ("row",)):
                row = rec["row"]
                if isinstance(row, int) and row >= 0:
                    in_order &= row == expected
                    expected += 1
        except FileNotFoundError:
            raise self._damaged(manifest, "items", "is missing") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, KeyError... for a damaged file
            raise self._damaged(manifest, "items", f"cannot be read as the items table ({_first_line(exc)})") from None
        if not in_order or expected != manifest["count"]:
            raise self._damaged(manifest, "items", f"does not list rows 0..{manifest['count'] - 1} of the index")

    def iter_errors(self, manifest: dict[str, Any]) -> Iterator[dict[str, str]]:
        """{path, error} of every entry that could not be indexed, read a batch at a time."""
        from index.records import iter_items

        for rec in iter_items(self.file(manifest, "items"), ("path", "status", "error")):
            if rec["status"] != "ok":
                yield {"path": rec["path"], "error": rec["error"]}

    def write_items(self, items: Items, name: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: items.columns[c] for c in ITEM_COLUMNS}, schema=ITEM_SCHEMA)
        with atomic_path(self.path / name) as tmp:
            pq.write_table(table, tmp)

    def read_embeddings(self, manifest: dict[str, Any], mmap: bool = False):
        """The generation's embeddings: with `mmap`, an index.shards.Shards view that reads rows on
        demand (bounded memory at any size); without, one float16 array in memory."""
        from index.integrity import embedding_keys
        from index.shards import Shards, ShardError

        keys = embedding_keys(manifest["files"])
        paths = [self.file(manifest, key) for key in keys]
        for key, path in zip(keys, paths):
            if not path.is_file():
                raise self._damaged(manifest, key, "is missing")
        try:
            emb = Shards(paths)
        except ShardError as exc:
            bad = next((k for k, p in zip(keys, paths) if _shard_problem(p)), keys[0])
            raise self._damaged(manifest, bad, f"cannot be read ({_first_line(exc)})") from None
        except OSError as exc:
            raise self._damaged(manifest, keys[0], f"cannot be read ({_first_line(exc)})") from None
        expected = (manifest["count"], manifest["clip"]["dim"])
        if emb.shape != expected:
            raise self._damaged(manifest, keys[-1], f"holds shape {emb.shape}, the manifest says {expected}")
        return emb if mmap else np.asarray(emb)

    def read_faiss(self, manifest: dict[str, Any]):
        """The FAISS index of the generation, with its search-time parameters set."""
        from index import faiss_index

        path = self.file(manifest, "faiss")
        if not path.is_file():
            raise self._damaged(manifest, "faiss", "is missing")
        try:
            index = faiss_index.read(path, manifest["faiss"]["type"], manifest["faiss"]["params"])
        except Exception as exc:  # faiss raises RuntimeError for a truncated or zeroed file
            raise self._damaged(manifest, "faiss", f"cannot be read as a FAISS index ({_first_line(exc)})") from None
        if index.ntotal != manifest["count"]:
            raise self._damaged(manifest, "faiss", f"holds {index.ntotal} vectors, the manifest says {manifest['count']}")
        return index

    def remove_stale(self, keep: set[str]) -> None:
        """Delete data files of older generations (and temp files of crashed writers)."""
        for entry in self.path.iterdir():
            generational = entry.name.split("-")[0] in ("items", "embeddings", "faiss")
            if entry.is_file() and entry.name not in keep and (generational or entry.name.endswith(".tmp")):
                entry.unlink(missing_ok=True)


class RelPaths(Sequence):
    """Relative image paths by embedding row, read on demand from an Arrow array."""

    def __init__(self, paths) -> None:
        self._paths = paths

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self._paths[row].as_py()

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths.to_pylist())


def _shard_problem(path: Path) -> bool:
    """Whether this one shard file is unreadable (to name the damaged shard of a set)."""
    from index.shards import Shards, ShardError

    try:
        Shards([path])
    except (ShardError, OSError):
        return True
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else type(exc).__name__)


@contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the index for the duration of a build; refuse a second writer.

    flock is released by the kernel when the process dies, so a killed build never leaves a
    stale lock behind.
    """
    import fcntl

    index_dir.mkdir(parents=True, exist_ok=True)
    handle = open(index_dir / "lock", "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise IndexLocked(
                f"The index at '{index_dir}' is being written by {holder}; wait for that build to finish."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()
