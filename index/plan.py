"""What a build does with each file, decided as a sorted merge of the scan and the previous generation.

Both streams come in path order (the scan walks sorted, the items table is written sorted), so
the match holds one record of each at a time, and writes its decisions to `pending/` spools:

  plan    every entry seen, in path order, with where its embedding comes from: the previous
          generation ("prev", row), an unfinished build's spool ("vec", row), nowhere (an error),
          or candidate number c ("cand", c) -- decided after hashing or embedding
  cands   the candidates: new paths and files whose size or mtime changed

What the match still holds in memory grows with what *changed*, never with the collection:
the hashes of deleted files (to tell renames from deletions), the candidates' hashes when there
is a previous generation to reuse embeddings from, and an interrupted build's records.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from index.records import ITEM_SCHEMA, RecordSpool, dumps_sidecars, loads_sidecars
from index.scan import FileEntry, Shard, Skipped

RECORD_KEYS = ("path", "size", "mtime_ns", "hash", "width", "height", "status", "error",
               "shard", "offset", "shard_size", "caption", "json")
CONTENT_KEYS = ("hash", "width", "height", "status", "error", "caption", "json")   # what a stat match keeps
SOURCE = {None: 0, "prev": 1, "vec": 2, "cand": 3}
KIND = {v: k for k, v in SOURCE.items()}
PLAN_SCHEMA = pa.schema([f for f in ITEM_SCHEMA if f.name != "row"] + [("src", pa.int8()), ("src_row", pa.int64())])
CAND_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("shard", pa.string()),
                         ("offset", pa.int64()), ("shard_size", pa.int64()), ("sidecars", pa.string()),
                         ("old", pa.string())])


def record(entry: FileEntry, **values: Any) -> dict[str, Any]:
    """The items-table record of an entry (content fields from `values`)."""
    rec = {"path": entry.rel, "size": entry.size, "mtime_ns": entry.mtime_ns, "hash": None, "width": None,
           "height": None, "status": "ok", "error": None, "shard": entry.shard,
           "offset": entry.offset if entry.shard is not None else None,
           "shard_size": entry.shard_size if entry.shard is not None else None, "caption": None, "json": None}
    rec.update(values)
    return rec


def entry_of(cand: dict[str, Any]) -> FileEntry:
    """The FileEntry a candidate record was made from."""
    return FileEntry(cand["path"], cand["size"], cand["mtime_ns"], cand["shard"],
                     -1 if cand["offset"] is None else cand["offset"], loads_sidecars(cand["sidecars"]),
                     -1 if cand["shard_size"] is None else cand["shard_size"])


@dataclass
class Counts:
    files: int = 0
    unchanged: int = 0
    resumed_ok: int = 0
    resumed: int = 0


@dataclass
class Plan:
    """The spools of one build's decisions and what the merge learned on the way."""

    plan: RecordSpool
    cands: RecordSpool
    gone: Counter = field(default_factory=Counter)   # content hash -> paths with it that left the collection
    prev_has_vectors: bool = False
    counts: Counts = field(default_factory=Counts)

    def close(self) -> None:
        self.plan.close()
        self.cands.close()


def same_stat(rec: dict | None, entry: FileEntry) -> bool:
    return bool(rec) and rec["size"] == entry.size and rec["mtime_ns"] == entry.mtime_ns


def merge(scan: Iterable[FileEntry | Skipped | Shard], previous: Iterator[dict], resumed: dict, folder: Path,
          on_skip: Callable[[str, str], None]) -> Plan:
    """Match the sorted scan against the sorted previous records; stat is free, so most of an
    unchanged collection is settled here without reading a byte of it -- and a shard whose size and
    mtime are the ones recorded keeps its records without its headers being read."""
    plan = Plan(RecordSpool(folder / "plan.arrow", PLAN_SCHEMA), RecordSpool(folder / "cands.arrow", CAND_SCHEMA))
    prev = _Cursor(previous)
    for item in scan:
        if isinstance(item, Shard):
            _merge_shard(plan, item, prev, resumed, on_skip)
        else:
            _merge_one(plan, item, prev, resumed, on_skip)
    for gone in prev.rest():
        _left(plan, gone)
    plan.plan.finish()
    plan.cands.finish()
    return plan


def _merge_one(plan: Plan, item: FileEntry | Skipped, prev: "_Cursor", resumed: dict,
               on_skip: Callable[[str, str], None]) -> None:
    plan.counts.files += 1
    for gone in prev.skip_before(item.rel):
        _left(plan, gone)
    old = prev.take(item.rel)
    if isinstance(item, Skipped):  # recorded like an unreadable image, with the reason
        _add(plan, record(FileEntry(item.rel, 0, 0), status="error", error=item.reason), None, -1)
        on_skip(item.rel, item.reason)
    else:
        _decide(plan, item, old, resumed.get(item.rel))


def _merge_shard(plan: Plan, shard: Shard, prev: "_Cursor", resumed: dict,
                 on_skip: Callable[[str, str], None]) -> None:
    """Keep an unchanged shard's records as they are, or list it and merge its members one by one.

    Streamed: a shard's records (a parquet file may hold a million rows) are never all in memory.
    Every member record of a shard in one generation carries the shard's size and mtime of that
    build, so the first member record tells whether the shard changed since. A parquet file's rows
    come in row order, so its records are matched by row number (`#10` after `#9`).
    """
    prefix = shard.prefix
    for gone in prev.skip_before(prefix):
        _left(plan, gone)
    recorded = prev.while_prefix(prefix)
    head: list[dict] = []   # the records before the first member: problems of the shard as a whole
    for rec in recorded:
        head.append(rec)
        if rec["shard"] == shard.rel:
            break
    first = head[-1] if head and head[-1]["shard"] == shard.rel else None
    if first is not None and first["shard_size"] == shard.size and first["mtime_ns"] == shard.mtime_ns:
        for rec in itertools.chain(head, recorded):
            ok = rec["status"] == "ok"
            plan.prev_has_vectors |= ok
            plan.counts.files += 1
            plan.counts.unchanged += ok
            _add(plan, {k: rec[k] for k in RECORD_KEYS}, "prev" if ok else None, rec["row"] if ok else -1)
        return
    inner = _Cursor(itertools.chain(head, recorded), key=_row_key if shard.is_parquet else None)
    for item in shard.members():
        _merge_one(plan, item, inner, resumed, on_skip)
    for gone in inner.rest():
        _left(plan, gone)


def _row_key(path: str) -> int:
    from index.parquet import row_number

    return row_number(path)


def _left(plan: Plan, rec: dict) -> None:
    plan.prev_has_vectors |= rec["status"] == "ok"
    if rec["status"] == "ok":
        plan.gone[rec["hash"]] += 1


def _decide(plan: Plan, entry: FileEntry, old: dict | None, res: tuple[dict, int | None] | None) -> None:
    if old is not None and old["status"] == "ok":
        plan.prev_has_vectors = True
    if same_stat(old, entry):
        ok = old["status"] == "ok"
        _add(plan, record(entry, **{k: old[k] for k in CONTENT_KEYS}), "prev" if ok else None, old["row"] if ok else -1)
        plan.counts.unchanged += ok
    elif res is not None and same_stat(res[0], entry):
        ok = res[0]["status"] == "ok"
        _add(plan, res[0], "vec" if ok else None, res[1] if ok else -1)
        plan.counts.resumed_ok += ok
        plan.counts.resumed += 1
    else:
        old_json = json.dumps({k: old[k] for k in CONTENT_KEYS}) if old is not None else None
        c = plan.cands.append({"path": entry.rel, "size": entry.size, "mtime_ns": entry.mtime_ns, "shard": entry.shard,
                               "offset": entry.offset if entry.shard is not None else None,
                               "shard_size": entry.shard_size if entry.shard is not None else None,
                               "sidecars": dumps_sidecars(entry.sidecars), "old": old_json})
        _add(plan, record(entry), "cand", c)


def _add(plan: Plan, rec: dict, kind: str | None, row: int) -> None:
    plan.plan.append(dict(rec, src=SOURCE[kind], src_row=row))


class _Cursor:
    """The previous generation's records, advanced in step with the scan."""

    def __init__(self, records: Iterator[dict], key: Callable[[str], Any] | None = None) -> None:
        self._it = iter(records)
        self._head = next(self._it, None)
        self._key = key or (lambda path: path)

    def skip_before(self, path: str) -> Iterator[dict]:
        key = self._key(path)
        while self._head is not None and self._key(self._head["path"]) < key:
            yield self._head
            self._head = next(self._it, None)

    def while_prefix(self, prefix: str) -> Iterator[dict]:
        while self._head is not None and self._head["path"].startswith(prefix):
            yield self._head
            self._head = next(self._it, None)

    def take(self, path: str) -> dict | None:
        if self._head is not None and self._head["path"] == path:
            head, self._head = self._head, next(self._it, None)
            return head
        return None

    def rest(self) -> Iterator[dict]:
        while self._head is not None:
            yield self._head
            self._head = next(self._it, None)


def known_content(hashes: set[str], previous: Iterator[dict], resumed: dict) -> dict[str, tuple]:
    """hash -> (kind, row, width, height) of an embedding already made, for the wanted hashes only.

    Why only those: a lookup of every hash in the collection would grow with it; the candidates'
    hashes grow with what changed.
    """
    known: dict[str, tuple] = {}
    for rec in previous:
        if rec["status"] == "ok" and rec["hash"] in hashes and rec["hash"] not in known:
            known[rec["hash"]] = ("prev", rec["row"], rec["width"], rec["height"])
    for rec, vec in resumed.values():
        if rec["status"] == "ok" and rec["hash"] in hashes:
            known.setdefault(rec["hash"], ("vec", vec, rec["width"], rec["height"]))
    return known
