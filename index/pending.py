"""An unfinished build on disk (`pending/`): the vectors it embedded and the records of each batch.

Vectors go once into `spool.f16` (index/shards.RowSpool); each batch's records go into a small
`chunk-N.json` naming the spool row of its first vector. Why not the vectors in the chunk too:
that held every new vector twice until the build published, doubling the disk a build needs.
A killed build loses at most one batch: the next run of the same build (same folder, same CLIP)
keeps the spool and every chunk that reads back intact, and embeds the rest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from index.plan import RECORD_KEYS
from index.shards import RowSpool
from index.store import IndexDir, atomic_write_bytes


class Pending:
    """Resume chunks and the vector spool of one build."""

    def __init__(self, store: IndexDir, session: dict[str, Any]) -> None:
        self.dir = store.pending
        self.session = session
        self.seq = 0
        self.first_seq = 0      # chunks numbered from here on belong to this run
        self.first_row = 0      # and spool rows from here on
        # every vector this build holds (resumed or new), on disk until published; ("vec", id) refers to it
        self.spool = RowSpool(self.dir / "spool.f16", session["dim"])

    def load(self) -> dict[str, tuple[dict, int | None]]:
        """Records of a previous unfinished build of the same folder with the same CLIP (else discard).

        Anything that does not read back exactly as `add` wrote it -- a session file or chunk cut
        half-way, garbage, a chunk naming spool rows that are not there or not finite -- is deleted
        and its files are simply embedded again.
        """
        found: dict[str, tuple[dict, int | None]] = {}
        if not self.dir.is_dir():
            return found
        try:
            same = json.loads((self.dir / "session.json").read_bytes().decode()) == self.session
        except (OSError, ValueError, RecursionError):
            same = False
        if not same:
            self.clear()
            return found
        self.spool.reopen()
        for chunk in sorted(self.dir.glob("chunk-*.json")):
            parsed = self._read_chunk(chunk)
            if parsed is None:
                chunk.unlink(missing_ok=True)
                continue
            seq, row, records = parsed
            self.seq = max(self.seq, seq + 1)
            for rec in records:
                vec = None
                if rec["status"] == "ok":
                    vec, row = row, row + 1
                found[rec["path"]] = (rec, vec)
        self.first_seq, self.first_row = self.seq, len(self.spool)
        return found

    def _read_chunk(self, chunk: Path) -> tuple[int, int, list[dict]] | None:
        """(sequence number, first spool row, records) of one chunk file, or None when it is not intact."""
        try:
            seq = int(chunk.stem.split("-")[1])
            data = json.loads(chunk.read_bytes().decode())
            row, records = int(data["first_row"]), data["records"]
        except Exception:  # ValueError, OSError, KeyError, TypeError, RecursionError...: redo the chunk
            return None
        if not isinstance(records, list) or not all(_valid_record(r) for r in records):
            return None
        n_ok = sum(1 for r in records if r["status"] == "ok")
        if row < 0 or row + n_ok > len(self.spool):
            return None
        if n_ok and not np.isfinite(self.spool.rows(row, row + n_ok).astype(np.float32)).all():
            return None
        return seq, row, records

    def add(self, records: list[dict], emb: np.ndarray) -> int:
        """Spool a batch's vectors, then its records; returns the spool row of its first vector."""
        self.dir.mkdir(parents=True, exist_ok=True)
        session_file = self.dir / "session.json"
        if not session_file.is_file():
            atomic_write_bytes(session_file, json.dumps(self.session, sort_keys=True).encode())
        row = self.spool.append(emb)
        self.spool.flush()
        data = json.dumps({"first_row": row, "records": records}).encode()
        atomic_write_bytes(self.dir / f"chunk-{self.seq:08d}.json", data)
        self.seq += 1
        return row

    def this_run(self) -> Iterator[dict]:
        """The records this run embedded, in the order it embedded them (chunk by chunk)."""
        for seq in range(self.first_seq, self.seq):
            data = json.loads((self.dir / f"chunk-{seq:08d}.json").read_bytes().decode())
            yield from data["records"]

    def clear(self) -> None:
        self.spool.close()
        self.spool.count = 0
        shutil.rmtree(self.dir, ignore_errors=True)


def _valid_record(rec: Any) -> bool:
    """A record as the builder makes it (what a resume chunk must hold)."""
    return (isinstance(rec, dict) and all(k in rec for k in RECORD_KEYS) and isinstance(rec["path"], str)
            and rec["status"] in ("ok", "error") and isinstance(rec["size"], int) and isinstance(rec["mtime_ns"], int))

