"""Embeddings on disk as float16 `.npy` shards, read with bounded memory whatever the collection size.

Why shards and explicit reads instead of one `np.load(mmap_mode="r")`:
  - a writer appends rows shard by shard, so publishing 10M vectors never holds them all;
  - every read is a `pread` into a fresh buffer. Pages touched through a memory map stay in the
    process's resident set until it is unmapped, so streaming 10 GB through one map (exact recall,
    FAISS training and filling) showed up as 10 GB of RSS; buffers are freed when dropped.
  - the page cache still serves repeated reads, so the refine step of a search (about a hundred
    scattered rows per query) costs microseconds once the rows are warm.

A single-shard set is byte for byte the `embeddings-<gen>.npy` of earlier index versions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

SHARD_ROWS = 1 << 20      # 1M rows: 1 GiB at d=512 in float16, 2 GiB at d=1024
DTYPE = np.dtype("<f2")


class ShardError(ValueError):
    """A shard file that is not the float16 matrix its name promises."""


def _data_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    """(byte offset of the data, shape) of a C-ordered little-endian float16 .npy file."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
        except (ValueError, EOFError, SyntaxError, TypeError) as exc:
            raise ShardError(f"has no valid .npy header ({str(exc).splitlines()[0][:120]})") from None
        offset = handle.tell()
    if np.dtype(dtype) != DTYPE or fortran or len(shape) != 2:
        raise ShardError(f"holds {np.dtype(dtype).name} {shape}{' (Fortran order)' if fortran else ''}, "
                         "not a float16 matrix")
    expected = offset + shape[0] * shape[1] * DTYPE.itemsize
    size = path.stat().st_size
    if size < expected:
        raise ShardError(f"is cut short ({size:,} of {expected:,} bytes)")
    return offset, shape



class _RowReader:
    """Gathering by row id on top of a contiguous `rows(start, stop)` read (one read per run of
    consecutive ids: right for the spool, whose ids mostly come in runs)."""

    dim: int

    def __len__(self) -> int:
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as one float16 array."""
        raise NotImplementedError

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows at `ids` (in the given order): one read per run of consecutive sorted ids."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"row ids must lie in [0, {len(self)})")
        unique, inverse = np.unique(ids, return_inverse=True)
        out = np.empty((len(unique), self.dim), DTYPE)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        for run in np.split(np.arange(len(unique)), breaks):
            if len(run):
                out[run[0]:run[-1] + 1] = self.rows(int(unique[run[0]]), int(unique[run[-1]]) + 1)
        return out[inverse.reshape(-1)]

    def chunks(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float16 block) over the whole set, `rows` at a time: bounded memory for any size."""
        for start in range(0, len(self), rows):
            yield start, self.rows(start, start + rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            return self.rows(start, stop)
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            return self.take(np.asarray([index]))[0]
        return self.take(np.asarray(key))


class Shards(_RowReader):
    """Read-only view of row-concatenated float16 shards, indexable like a numpy array.

    Supports `len`, `.shape`, `x[i]`, `x[a:b]` (step 1) and `x[int_array]` (any order, repeats
    allowed); every read returns a new float16 array.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._offsets: list[int] = []
        starts, dim, total = [], None, 0
        for path in self.paths:
            offset, shape = _data_offset(path)
            if dim is not None and shape[1] != dim:
                raise ShardError(f"holds {shape[1]}-d rows, the first shard {dim}-d")
            dim = shape[1]
            self._offsets.append(offset)
            starts.append(total)
            total += shape[0]
        self._starts = np.asarray(starts + [total], np.int64)
        self.dim = int(dim or 0)
        self.shape = (int(total), self.dim)
        self.dtype = DTYPE
        self.ndim = 2
        self._fds: list[int | None] = [None] * len(self.paths)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        for i, fd in enumerate(getattr(self, "_fds", [])):
            if fd is not None:
                os.close(fd)
                self._fds[i] = None

    def _fd(self, shard: int) -> int:
        if self._fds[shard] is None:
            self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._fds[shard]

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows at `ids` (any order), gathered through a map of each shard that is closed before
        returning: scattered rows (a search's refine reads thousands) cost one page each, with no
        per-row system call, and the resident set drops again as soon as the map is gone."""
        import mmap

        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"row ids must lie in [0, {len(self)})")
        out = np.empty((len(ids), self.dim), DTYPE)
        shard_of = np.searchsorted(self._starts, ids, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            rows = int(self._starts[shard + 1] - self._starts[shard])
            with mmap.mmap(self._fd(int(shard)), 0, access=mmap.ACCESS_READ) as mapped:
                matrix = np.frombuffer(mapped, DTYPE, count=rows * self.dim, offset=self._offsets[shard])
                out[where] = matrix.reshape(rows, self.dim)[ids[where] - self._starts[shard]]
                del matrix
        return out

    def _read(self, shard: int, first: int, count: int, out: np.ndarray) -> None:
        """Rows [first, first + count) of one shard into `out` (a C-contiguous float16 block)."""
        row_bytes = self.dim * DTYPE.itemsize
        view = memoryview(out).cast("B")
        done, want = 0, count * row_bytes
        position = self._offsets[shard] + first * row_bytes
        while done < want:
            got = os.preadv(self._fd(shard), [view[done:]], position + done)
            if got <= 0:
                raise ShardError(f"{self.paths[shard].name} ended while reading rows")
            done += got

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as one float16 array (contiguous reads, shard by shard)."""
        start, stop = max(0, start), min(stop, len(self))
        out = np.empty((max(0, stop - start), self.dim), DTYPE)
        row = start
        while row < stop:
            shard = int(np.searchsorted(self._starts, row, side="right") - 1)
            first = row - int(self._starts[shard])
            count = min(stop, int(self._starts[shard + 1])) - row
            self._read(shard, first, count, out[row - start:row - start + count])
            row += count
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.rows(0, len(self))
        return whole if dtype is None else whole.astype(dtype)


def _write_at(path: Path, offset: int, data: memoryview) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def shard_names(stem: str, count: int) -> list[str]:
    """File names of `count` shards: `<stem>.npy`, then `<stem>-1.npy`, `<stem>-2.npy`, ..."""
    return [f"{stem}.npy" if i == 0 else f"{stem}-{i}.npy" for i in range(count)]


def shard_count(rows: int, shard_rows: int | None = None) -> int:
    return max(1, -(-rows // (shard_rows or SHARD_ROWS)))


class RowSpool(_RowReader):
    """Rows appended to one scratch file and read back by id.

    Why: a build embeds new images long before it publishes them; holding those vectors in memory
    until then grew with the collection (10M new 512-d rows are 10 GB). The spool keeps them on
    disk (pending/, deleted with the resume chunks once the generation is published).
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim, self.count = Path(path), dim, 0
        self._handle = None

    def __len__(self) -> int:
        return self.count

    def append(self, block: np.ndarray) -> int:
        """Append `block` [k, dim]; returns the id of its first row."""
        if self._handle is None:  # opened (and truncated) on first use: a spool lives for one build
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "w+b")
        data = np.ascontiguousarray(block, dtype=DTYPE).reshape(-1, self.dim)
        start = self.count
        if not len(data):
            return start
        self._handle.seek(start * self.dim * DTYPE.itemsize)
        self._handle.write(memoryview(data).cast("B"))
        self.count += len(data)
        return start

    def reopen(self) -> None:
        """Keep the rows an interrupted build spooled (a torn last row is cut off) instead of truncating."""
        self.close()
        if not self.path.is_file():
            return
        row_bytes = self.dim * DTYPE.itemsize
        self.count = self.path.stat().st_size // row_bytes
        self._handle = open(self.path, "r+b")
        self._handle.truncate(self.count * row_bytes)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def rows(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.count)
        out = np.empty((max(0, stop - start), self.dim), DTYPE)
        if len(out):
            self._handle.flush()
            got = os.preadv(self._handle.fileno(), [memoryview(out).cast("B")], start * self.dim * DTYPE.itemsize)
            if got != out.nbytes:
                raise ShardError(f"{self.path.name} ended while reading rows")
        return out

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ShardWriter:
    """Writes `rows` float16 rows into `paths` (the shard files of `shard_names`), block by block.

    Each shard is created at its full size with a valid .npy header, then filled with `pwrite`:
    nothing is mapped, so writing 10 GB holds one block in memory at a time.
    """

    def __init__(self, paths: Sequence[Path], rows: int, dim: int, shard_rows: int | None = None) -> None:
        shard_rows = shard_rows or SHARD_ROWS
        self.paths, self.rows, self.dim, self.shard_rows = [Path(p) for p in paths], rows, dim, shard_rows
        if len(self.paths) != shard_count(rows, shard_rows):
            raise ValueError(f"{rows} rows need {shard_count(rows, shard_rows)} shard files, got {len(self.paths)}")
        self.written = 0

    def write(self, block: np.ndarray) -> None:
        """Append `block` (any float dtype, shape [k, dim])."""
        block = np.ascontiguousarray(block, dtype=DTYPE)
        if self.written + len(block) > self.rows:
            raise ValueError("more rows written than the shards were sized for")
        done = 0
        while done < len(block):
            shard, first = divmod(self.written, self.shard_rows)
            count = min(len(block) - done, self._shard_len(shard) - first)
            if first == 0:
                self._create(shard)
            offset, _ = _data_offset(self.paths[shard])
            _write_at(self.paths[shard], offset + first * self.dim * DTYPE.itemsize,
                      memoryview(block[done:done + count]).cast("B"))
            done += count
            self.written += count

    def _shard_len(self, shard: int) -> int:
        return min(self.shard_rows, self.rows - shard * self.shard_rows)

    def _create(self, shard: int) -> None:
        """The shard file at full size (sparse until written), header first."""
        header = np.lib.format.open_memmap(self.paths[shard], mode="w+", dtype=DTYPE,
                                           shape=(self._shard_len(shard), self.dim))
        del header

    def close(self) -> None:
        """Check every row was written; create the (empty) shard of a 0-row set."""
        if self.written != self.rows:
            raise ValueError(f"{self.written} of {self.rows} rows written")
        if self.rows == 0:
            self._create(0)
