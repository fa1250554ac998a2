"""Per-file records on disk, in path order: what lets a build's memory stay flat at any collection size.

Why: holding one Python record per file while the scan is matched against the previous
generation cost 1,188 bytes a file (11 GiB at 10M files). A build now keeps records in Arrow
IPC files in `pending/` (`RecordSpool`: appended a batch at a time, read back in order or by
index) and reads the previous generation's items table batch by batch (`iter_items`); the match
is a sorted merge of those streams (index/plan.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

ITEM_SCHEMA = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("hash", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("status", pa.string()), ("error", pa.string()),
    ("row", pa.int64()), ("shard", pa.string()), ("offset", pa.int64()), ("shard_size", pa.int64()),
    ("caption", pa.string()),
    ("json", pa.string()),
])
ITEM_COLUMNS = tuple(ITEM_SCHEMA.names)
NEW_COLUMNS = ("shard", "offset", "shard_size", "caption", "json")   # absent from items tables written before shards
BATCH = 16384


class RecordSpool:
    """Records (dicts of `schema`'s columns) appended to an Arrow IPC file, read back in order or by index.

    Random access reads the batch that holds the row and keeps it (a DataLoader worker walking its
    part in order reads each batch once); the file is opened lazily, so a forked worker opens its own.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = Path(path), schema
        self.count = 0
        self._rows: list[dict] = []
        self._writer = None
        self._reader = None
        self._cached: tuple[int, list[dict]] | None = None

    def __len__(self) -> int:
        return self.count

    def append(self, record: dict[str, Any]) -> int:
        """Add one record; returns its index."""
        self._rows.append(record)
        self.count += 1
        if len(self._rows) >= BATCH:
            self._flush()
        return self.count - 1

    def _flush(self) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pa.ipc.new_file(str(self.path), self.schema)
        if self._rows:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def finish(self) -> None:
        """Close the file for writing; from now on it is read."""
        self._flush()
        self._writer.close()
        self._writer = None

    def _batch(self, number: int) -> list[dict]:
        if self._cached is None or self._cached[0] != number:
            if self._reader is None:
                self._reader = pa.ipc.open_file(pa.OSFile(str(self.path), "rb"))
            self._cached = (number, self._reader.get_batch(number).to_pylist())
        return self._cached[1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self._batch(i // BATCH)[i % BATCH]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for number in range(-(-self.count // BATCH)):
            yield from self._batch(number)
        self._cached = None

    def __getstate__(self) -> dict:  # a worker process opens the file itself
        return {**self.__dict__, "_reader": None, "_cached": None, "_writer": None}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader = None
        self._cached = None


def iter_items(path: Path, columns: tuple[str, ...] = ITEM_COLUMNS) -> Iterator[dict[str, Any]]:
    """The rows of an items table in file order, a batch at a time; columns an older table lacks are None."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    present = [c for c in columns if c in table.schema_arrow.names]
    missing = {c: None for c in columns if c not in present}
    for batch in table.iter_batches(batch_size=BATCH, columns=present):
        for row in batch.to_pylist():
            row.update(missing)
            yield row


class ItemsWriter:
    """The new generation's items table, written a batch at a time (bounded memory at any size)."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(str(path), ITEM_SCHEMA)
        self._rows: list[dict] = []

    def write(self, record: dict[str, Any]) -> None:
        self._rows.append(record)
        if len(self._rows) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self._rows, schema=ITEM_SCHEMA))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def dumps_sidecars(sidecars: tuple) -> str | None:
    return json.dumps(sidecars) if sidecars else None


def loads_sidecars(text: str | None) -> tuple:
    return tuple(tuple(s) for s in json.loads(text)) if text else ()
