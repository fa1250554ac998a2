"""`index build`: scan a collection, embed what is new, and publish a new index generation.

A collection is a folder of images, webdataset tar shards in it, or a list of shards (see
index/sources.py). Work is decided per image:
  unchanged  same path, size and mtime as in the index (or in an unfinished build's chunks)
  reused     new path or new mtime, but the content hash is already known (rename, touch, copy,
             a re-packed shard)
  embedded   decoded in DataLoader workers and embedded with CLIP, one chunk file per batch
  skipped    could not be decoded; recorded with its reason, the build goes on
The scan is matched against the previous generation as a sorted merge (index/plan.py) and the
new items table is written a batch at a time, so memory does not grow with the collection.
Chunks in `pending/` make an interrupted build resume where it stopped; they are deleted once
the new generation is published.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from index import faiss_index
from index.errors import IndexDamaged, IndexError_, ModelMismatch
from index.imageio import DEFAULT_MAX_PIXELS
from index.pending import Pending
from index.plan import KIND, PLAN_SCHEMA, SOURCE, Plan, entry_of, known_content, merge, record
from index.records import RecordSpool, iter_items
from index.scan import FileEntry, hash_many, iter_scan, read_sidecars
from index.store import FORMAT_VERSION, IndexDir, writer_lock


class BuildInterrupted(RuntimeError):
    """Raised by the `fail_after_batches` test hook to simulate a killed build."""


@dataclass
class BuildOptions:
    """What to index and how (the CLI fills this from its options)."""

    root: Path
    index_dir: Path
    clip_spec: str                      # as recorded in the manifest ("demo", a path, or NAME/PRETRAINED)
    model: str | None = None            # Stable Diffusion model recorded for --rerank
    shards: list[Path] | None = None    # index only these tar shards under `root` (a brace pattern or a list)
    source: str | None = None           # what the user named (folder, pattern or list file), for the manifest
    batch_size: int = 64
    workers: int | None = None          # None: up to 4 when there is enough work
    max_memory: int = 8 << 30
    max_pixels: int = DEFAULT_MAX_PIXELS
    index_type: str | None = None       # force flat/hnsw/ivf_flat/ivf_pq instead of choosing
    rebuild: bool = False
    dct: bool = True                    # decode JPEGs at the DCT scale the model needs (False: full decode)
    image_column: str | None = None     # parquet files: the column of image bytes (None: detected)
    caption_column: str | None = None   # parquet files: the caption column (None: detected)
    fail_after_batches: int | None = None
    # Where decoding and CLIP run instead of this process (index/ray_embed.py): called with
    # (opts, files to embed, known hashes), yields (embeddings of the good files, per-file meta as
    # DecodeDataset makes it, embed seconds) per finished batch; the builder records each as locally.
    embedder: Callable[["BuildOptions", Sequence[FileEntry], dict], Iterator[tuple[np.ndarray, list[dict], float]]] | None = None


@dataclass
class BuildEvents:
    """Callbacks for a UI; all optional."""

    on_embed_start: Callable[[int], None] = lambda total: None
    on_batch: Callable[[int], None] = lambda count: None
    on_skip: Callable[[str, str], None] = lambda rel, reason: None
    on_stage: Callable[[str], None] = lambda text: None


@dataclass
class BuildSummary:
    files: int = 0
    indexed: int = 0          # embedded in this run (including resumed chunks of an interrupted run)
    skipped: int = 0          # unreadable files, all recorded with their error
    unchanged: int = 0        # same path, embedding kept (same stat, or touched with the same content)
    renamed: int = 0          # a new path holding the content of a path that is gone: embedding moved
    duplicates: int = 0       # a new path holding content still indexed under another path: embedding copied
    removed: int = 0          # in the old index, gone from the folder (renamed files are not counted)
    reused_by_hash: int = 0   # touched + renamed + duplicates: embeddings found by content hash
    resumed: int = 0          # subset of indexed: taken from chunks of an interrupted build
    seconds: float = 0.0
    embed_seconds: float = 0.0
    decode_seconds: float = 0.0   # summed over worker processes
    images_per_second: float = 0.0
    index_type: str = ""
    recall_at_10: float = 1.0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    safe_names: list[str] = field(default_factory=list)  # names not valid UTF-8, indexed under this spelling
    index_type_note: str = ""  # why the requested FAISS type was not built
    repaired: list[str] = field(default_factory=list)   # damage found in the previous generation (now fixed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped_files"] = [{"path": p, "error": e} for p, e in self.skipped_files]
        return data


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_compatible(manifest: dict, opts: BuildOptions, clip) -> None:
    if manifest["clip"]["fingerprint"] != clip.fingerprint:
        raise ModelMismatch(
            f"The index at '{opts.index_dir}' was built with CLIP '{manifest['clip']['spec']}', not "
            f"'{opts.clip_spec}'; pass the same --clip, use another --index, or add --rebuild."
        )
    if Path(manifest["root"]) != opts.root:
        raise IndexError_(
            f"The index at '{opts.index_dir}' holds images of '{manifest['root']}', not '{opts.root}'; "
            f"use another --index or add --rebuild."
        )


def build_index(opts: BuildOptions, clip, events: BuildEvents | None = None) -> BuildSummary:
    """Bring the index at `opts.index_dir` up to date with the images under `opts.root`."""
    events = events or BuildEvents()
    opts.root = Path(opts.root).resolve()
    if not opts.root.is_dir():
        raise IndexError_(f"'{opts.root}' is not a folder of images.")
    store = IndexDir(opts.index_dir)
    start = time.perf_counter()
    try:
        with writer_lock(store.path):
            return _build_locked(opts, clip, store, events, start)
    except OSError as exc:  # a full or read-only disk: one sentence; the published generation is untouched
        from index.fs import write_failure

        raise write_failure(exc, store.path, "the previous index is unchanged and the batches embedded so far "
                                             "are kept: fix that and run the same command again.") from None


@dataclass
class _Previous:
    """The published generation a build updates: its manifest, items table and embeddings (or what is intact)."""

    manifest: dict | None = None
    items: Path | None = None
    emb: Any = None

    def records(self) -> Iterator[dict]:
        """Its records in path order; with the embeddings lost, only those that need no vector."""
        if self.items is None:
            return iter(())
        rows = iter_items(self.items)
        return rows if self.emb is not None else (r for r in rows if r["status"] != "ok")


def _build_locked(opts: BuildOptions, clip, store: IndexDir, events: BuildEvents, start: float) -> BuildSummary:
    summary = BuildSummary()
    prev = _read_previous(opts, clip, store, summary)
    from index.parquet import remember_columns

    columns = (opts.image_column, opts.caption_column)
    remember_columns(opts.root, *columns)  # decoding workers (forked) read parquet rows with these
    session = {"root": str(opts.root), "clip": clip.fingerprint, "dim": clip.dim, "max_pixels": opts.max_pixels,
               "dct": opts.dct}
    if any(columns):
        session["parquet_columns"] = list(columns)
    pending = Pending(store, session)
    if opts.rebuild:
        pending.clear()
    resumed = pending.load()

    events.on_stage("Scanning")
    renamed: list[str] = []
    plan = merge(iter_scan(opts.root, opts.shards, renamed, columns), prev.records(), resumed,
                 pending.dir / "plan", events.on_skip)
    resolved = None
    try:
        summary.files, summary.safe_names = plan.counts.files, renamed
        summary.unchanged, summary.indexed, summary.resumed = (plan.counts.unchanged, plan.counts.resumed_ok,
                                                               plan.counts.resumed)
        resolved, todo, hashes = _match_by_hash(opts, plan, prev, resumed, summary, events)
        embed_seconds = _embed(opts, clip, todo, hashes, pending, summary, events)
        events.on_stage("Building the FAISS index")
        manifest = _publish(opts, clip, store, prev, plan, resolved, pending, summary)
    finally:
        plan.close()
        if resolved is not None:
            resolved.close()
    pending.clear()
    summary.seconds = time.perf_counter() - start
    summary.embed_seconds = embed_seconds
    summary.images_per_second = len(todo) / max(summary.seconds, 1e-9) if len(todo) else 0.0
    summary.index_type = manifest["faiss"]["type"]
    summary.recall_at_10 = manifest["faiss"]["recall_at_10"]
    return summary


def _read_previous(opts: BuildOptions, clip, store: IndexDir, summary: BuildSummary) -> _Previous:
    """The published index this build updates.

    A damaged generation is repaired, not refused: what is wrong goes into `summary.repaired`,
    and whatever is intact is used -- with the items table and embeddings intact every embedding
    is reused (only the FAISS file is rebuilt); with the embeddings lost, files are embedded again.
    """
    from index.integrity import check_files, embedding_keys

    if not store.exists() or opts.rebuild:
        return _Previous()
    try:
        manifest = store.read_manifest()
    except IndexDamaged as exc:
        summary.repaired = [p.sentence() for p in exc.problems]
        manifest = store.read_backup_manifest()  # its files verified: that generation is reused whole
        if manifest is None:
            return _Previous()
    _check_compatible(manifest, opts, clip)
    # the FAISS file is rebuilt by every build: only what is reused is verified byte for byte
    problems = check_files(store.path, manifest, deep=True, deep_keys=("items", "embeddings"))
    bad = {p.file for p in problems}
    items = emb = None
    try:
        if manifest["files"]["items"] not in bad:
            store.verify_items(manifest)  # parses the table and checks its rows, a batch at a time
            items = store.file(manifest, "items")
        if not any(manifest["files"][key] in bad for key in embedding_keys(manifest["files"])):
            emb = store.read_embeddings(manifest, mmap=True)
    except IndexDamaged as exc:
        problems += exc.problems
    summary.repaired += [p.sentence() for p in problems]
    return _Previous(manifest, items, emb)


def _match_by_hash(opts: BuildOptions, plan: Plan, prev: _Previous, resumed: dict, summary: BuildSummary,
                   events: BuildEvents) -> tuple["Resolved", Sequence[FileEntry], dict[str, str | None]]:
    """Reuse the embedding of a renamed, touched or copied image; return (resolved candidates, what
    must be embedded, the hashes already read of what must be embedded).

    Images are hashed only when something is known to match against, so a first build reads every
    image once (to decode it), not twice; then everything to embed is the candidate spool itself.
    Candidates are hashed a batch at a time into a spool and their resolved records spooled too,
    so a rewritten million-row parquet file costs only the set of its hashes in memory.
    """
    resolved = Resolved(plan.plan.path.parent / "resolved.arrow")
    if not len(plan.cands):
        return resolved.finish(), [], {}
    if not (plan.prev_has_vectors or any(rec["status"] == "ok" for rec, _ in resumed.values())):
        return resolved.finish(), _Todo(plan.cands, None), {}
    events.on_stage("Hashing changed files")
    hashed = RecordSpool(plan.plan.path.parent / "hashes.arrow", pa.schema([("hash", pa.string())]))
    wanted: set[str] = set()
    chunk: list[FileEntry] = []
    for cand in itertools.chain(plan.cands, [None]):
        if cand is not None:
            chunk.append(entry_of(cand))
        if len(chunk) >= 4096 or (cand is None and chunk):
            found = hash_many(opts.root, chunk)
            for entry in chunk:
                hashed.append({"hash": found.get(entry.rel)})
                wanted.add(found.get(entry.rel) or "")
            chunk = []
    hashed.finish()
    wanted.discard("")
    known = known_content(wanted, prev.records(), resumed)
    del wanted
    todo: list[int] = []
    hashes: dict[str, str | None] = {}
    for c, (cand, got) in enumerate(zip(plan.cands, hashed)):
        entry, old = entry_of(cand), (None if cand["old"] is None else json.loads(cand["old"]))
        h = got["hash"]
        if h is not None and h in known:
            kind, row, width, height = known[h]
            rec = record(entry, hash=h, width=width, height=height, **read_sidecars(opts.root, entry))
            resolved.add(c, rec, (kind, row), old is None)
            summary.unchanged += old is not None  # touched; a new path is a rename or a duplicate
            summary.reused_by_hash += 1
        elif old and h is not None and old["hash"] == h and old["status"] != "ok":
            resolved.add(c, record(entry, **old), None, False)
        else:
            todo.append(c)
            hashes[entry.rel] = h
    hashed.close()
    return resolved.finish(), _Todo(plan.cands, todo), hashes


class Resolved:
    """Candidates settled by their hash, spooled in candidate order: c -> (record, embedding source,
    a new path reusing an old embedding). Looked up in increasing c (the order the plan is read back
    in), so it is read as a stream; what `_final_records` asks about is the next candidate."""

    SCHEMA = pa.schema(list(PLAN_SCHEMA) + [("c", pa.int64()), ("moved", pa.bool_())])

    def __init__(self, path: Path) -> None:
        self.spool = RecordSpool(path, self.SCHEMA)
        self._it: Iterator[dict] | None = None
        self._head: dict | None = None

    def add(self, c: int, rec: dict, source: tuple | None, moved: bool) -> None:
        kind, row = source if source else (None, -1)
        self.spool.append(dict(rec, src=SOURCE[kind], src_row=row, c=c, moved=moved))

    def finish(self) -> "Resolved":
        self.spool.finish()
        return self

    def __len__(self) -> int:
        return len(self.spool)

    def __contains__(self, c: int) -> bool:
        if self._it is None:
            self._it = iter(self.spool)
            self._head = next(self._it, None)
        while self._head is not None and self._head["c"] < c:
            self._head = next(self._it, None)
        return self._head is not None and self._head["c"] == c

    def __getitem__(self, c: int) -> tuple[dict, tuple | None, bool]:
        if c not in self:
            raise KeyError(c)
        head = dict(self._head)
        kind, row, moved = KIND[head.pop("src")], head.pop("src_row"), head.pop("moved")
        head.pop("c")
        return head, ((kind, row) if kind else None), moved

    def close(self) -> None:
        self.spool.close()


class _Todo(Sequence):
    """The candidates to embed, as FileEntry, read from the candidate spool (all of it, or the listed ones)."""

    def __init__(self, cands, picked: list[int] | None) -> None:
        self.cands, self.picked = cands, picked

    def __len__(self) -> int:
        return len(self.cands) if self.picked is None else len(self.picked)

    def __getitem__(self, i: int) -> FileEntry:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return entry_of(self.cands[i if self.picked is None else self.picked[i]])


def _embed(opts: BuildOptions, clip, todo: Sequence[FileEntry], hashes: dict, pending: Pending,
           summary: BuildSummary, events: BuildEvents) -> float:
    """Decode in workers, embed in the main process (or in `opts.embedder`), persist each batch as a chunk."""
    from index.dataset import DecodeDataset, make_loader

    if not len(todo):
        return 0.0
    if opts.embedder is not None:
        events.on_stage("Embedding")
        events.on_embed_start(len(todo))
        return _embed_batches(opts, todo, opts.embedder(opts, todo, hashes), pending, summary, events)
    workers = opts.workers
    if workers is None:
        workers = 0 if len(todo) < 2 * opts.batch_size else min(4, os.cpu_count() or 1)
    dataset = DecodeDataset(opts.root, todo, clip.preprocess, opts.max_pixels, hashes, opts.dct)
    loader = make_loader(dataset, opts.batch_size, workers, pin_memory=clip.device.startswith("cuda"))
    events.on_stage("Embedding")
    events.on_embed_start(len(todo))
    with _share_cores(clip.device, workers):
        return _embed_batches(opts, todo, _local_batches(clip, loader), pending, summary, events)


def _local_batches(clip, loader) -> Iterator[tuple[np.ndarray, list[dict], float]]:
    """(embeddings of the decoded images, meta of every file, embed seconds) per DataLoader batch."""
    for pixels, meta in loader:
        tick = time.perf_counter()
        emb = clip.embed_pixels(pixels) if pixels is not None else np.zeros((0, clip.dim), np.float32)
        yield emb, meta, time.perf_counter() - tick


@contextmanager
def _share_cores(device: str, workers: int) -> Iterator[None]:
    """On CPU, leave the decoding workers their cores: torch's spinning intra-op threads competing
    with them made embedding ~10x slower on a 2-core machine."""
    import torch

    before = torch.get_num_threads()
    if device == "cpu" and workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _embed_batches(opts: BuildOptions, todo: Sequence[FileEntry], batches: Iterator, pending: Pending,
                   summary: BuildSummary, events: BuildEvents) -> float:
    try:
        return _record_batches(opts, todo, batches, pending, summary, events)
    finally:  # stop decode workers (or Ray) now, also on error: their inherited fds would hold the lock
        getattr(batches, "close", lambda: None)()


def _record_batches(opts: BuildOptions, todo: Sequence[FileEntry], batches: Iterator, pending: Pending,
                    summary: BuildSummary, events: BuildEvents) -> float:
    """Record each finished batch as a chunk, in the order of `todo` (the order `_publish` reads them back)."""
    embed_seconds, waiting, next_i = 0.0, {}, 0
    for batch_no, (emb, meta, seconds) in enumerate(batches):
        if opts.fail_after_batches is not None and batch_no >= opts.fail_after_batches:
            raise BuildInterrupted(f"simulated interruption after {batch_no} batches")
        embed_seconds += seconds
        records = []
        for item in meta:
            entry = todo[item["i"]]
            summary.decode_seconds += item["seconds"]
            extra = {"caption": item.get("caption"), "json": item.get("json")}
            if item["ok"]:
                records.append(record(entry, hash=item["hash"], width=item["width"], height=item["height"], **extra))
                summary.indexed += 1
            else:
                records.append(record(entry, hash=item["hash"], status="error", error=item["error"], **extra))
                events.on_skip(entry.rel, item["error"])
        waiting[meta[0]["i"] if meta else next_i] = (records, emb)
        while next_i in waiting:  # a batch that finished early (Ray) waits for the ones before it
            records, emb = waiting.pop(next_i)
            pending.add(records, emb)
            next_i += max(1, len(records))
        events.on_batch(len(meta))
    return embed_seconds


def _publish(opts: BuildOptions, clip, store: IndexDir, prev: _Previous, plan: Plan, resolved: dict,
             pending: Pending, summary: BuildSummary) -> dict[str, Any]:
    """Write the new generation (items, embeddings, FAISS) under temp names, then swap the manifest."""
    gen = _next_generation(store, prev.manifest)
    items_name = f"items-{gen}.parquet"
    try:
        n, seen, errors = _write_items(store, items_name, plan, resolved, pending, summary)
        files = _generation_files(gen, n)
        gpu = faiss_index.gpu_available()  # recorded in the manifest: IVF training ran on it
        kind = opts.index_type or faiss_index.choose_index_type(n, clip.dim, opts.max_memory)
        blocks = _embedding_blocks(pending.dir / "sources.bin", prev.emb, pending.spool, clip.dim)
        checks, built, kind = _write_generation(store, files, blocks, n, clip.dim, kind, summary)
    except BaseException:
        (store.path / items_name).unlink(missing_ok=True)
        raise
    model = opts.model or (prev.manifest or {}).get("model")
    manifest = {
        "format_version": FORMAT_VERSION,
        "generation": gen,
        "root": str(opts.root),
        "source": opts.source or str(opts.root),
        "clip": {"spec": opts.clip_spec, "fingerprint": clip.fingerprint, "dim": clip.dim},
        "model": model,
        "count": n,
        "files_seen": seen,
        "errors": errors,
        "max_pixels": opts.max_pixels,
        "decode": "dct-scaled" if opts.dct else "full",
        "parquet_columns": {"image": opts.image_column, "caption": opts.caption_column},
        "faiss": {"type": kind, "params": built.params, "recall_at_10": round(built.recall_at_10, 4),
                  "recall_queries": built.recall_queries, "gpu": gpu, "tuning": built.tuning,
                  "build_seconds": round(built.build_seconds, 3)},
        "files": files,
        "checks": checks,
        "created": (prev.manifest or {}).get("created", _now()),
        "updated": _now(),
    }
    try:
        store.write_manifest(manifest)
    except BaseException:
        for name in files.values():
            (store.path / name).unlink(missing_ok=True)
        raise
    store.remove_stale(set(files.values()) | {"manifest.json", "lock"})
    return manifest


def _final_records(plan: Plan, resolved: dict, pending: Pending) -> Iterator[tuple[dict, tuple | None, bool]]:
    """(record, embedding source, is a new path reusing an old embedding) of every entry, in path order:
    the plan's decisions, with each candidate replaced by its hash match or its embedded record."""
    embedded = pending.this_run()
    spool_row = _RowCounter(pending)
    for c_rec in plan.plan:
        kind, row = KIND[c_rec.pop("src")], c_rec.pop("src_row")
        if kind != "cand":
            yield c_rec, (kind, row) if kind else None, False
        elif row in resolved:
            yield resolved[row]
        else:
            rec = next(embedded)
            if rec["path"] != c_rec["path"]:
                raise RuntimeError(f"embedded records out of order at {c_rec['path']!r} ({rec['path']!r})")
            yield rec, ("vec", spool_row.take()) if rec["status"] == "ok" else None, False


class _RowCounter:
    """The spool row of each vector this run embedded, in the order they were spooled."""

    def __init__(self, pending: Pending) -> None:
        self.next = pending.first_row

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def _write_items(store: IndexDir, name: str, plan: Plan, resolved: dict, pending: Pending,
                 summary: BuildSummary) -> tuple[int, int, int]:
    """Stream the final records into the items table and the embedding sources into `sources.bin`;
    returns (images with an embedding, entries seen, errors). Counts renames, duplicates, removals."""
    from index.records import ItemsWriter
    from index.store import atomic_path

    n = seen = errors = 0
    gone = plan.gone
    embedded_now: set[str] = set()  # contents embedded in this run: identical new files are duplicates too
    sources = np.empty((4096, 2), np.int64)
    with atomic_path(store.path / name) as tmp, open(pending.dir / "sources.bin", "wb") as out:
        writer, filled = ItemsWriter(tmp), 0
        for rec, source, moved in _final_records(plan, resolved, pending):
            seen += 1
            rec = dict(rec, row=-1)
            if rec["status"] == "ok":
                rec["row"], n = n, n + 1
                sources[filled] = (1 if source[0] == "prev" else 2, source[1])
                filled += 1
                if filled == len(sources):
                    out.write(sources.tobytes())
                    filled = 0
            else:
                errors += 1
                summary.skipped += 1
                summary.skipped_files.append((rec["path"], rec["error"]))
            if rec["status"] == "ok" and source[0] != "prev" and rec.get("hash"):
                summary.duplicates += rec["hash"] in embedded_now
                embedded_now.add(rec["hash"])
            if moved and source[0] == "prev":  # a rename when a path with this content is gone, else a copy
                if gone[rec["hash"]] > 0:
                    gone[rec["hash"]] -= 1
                    summary.renamed += 1
                else:
                    summary.duplicates += 1
            writer.write(rec)
        out.write(sources[:filled].tobytes())
        writer.close()
    summary.removed = sum(gone.values())
    return n, seen, errors


def _generation_files(gen: int, rows: int) -> dict[str, str]:
    """The data file names of generation `gen`: one embeddings shard per SHARD_ROWS rows."""
    from index.shards import shard_count, shard_names

    shards = shard_names(f"embeddings-{gen}", shard_count(rows))
    files = {"items": f"items-{gen}.parquet", "embeddings": shards[0], "faiss": f"faiss-{gen}.index"}
    files.update({f"embeddings.{i}": name for i, name in enumerate(shards) if i})
    return files


def _embedding_blocks(sources_file: Path, prev_emb, spool, dim: int, rows: int = 65536) -> Iterator[np.ndarray]:
    """The new generation's embeddings, `rows` at a time: reused rows read from the previous
    generation's shards, new ones from this build's spool (both gathered in sorted reads)."""
    with open(sources_file, "rb") as handle:
        while True:
            part = np.frombuffer(handle.read(rows * 16), np.int64).reshape(-1, 2)
            if not len(part):
                return
            block = np.zeros((len(part), dim), np.float16)
            for code, store in ((1, prev_emb), (2, spool)):
                dst = np.flatnonzero(part[:, 0] == code)
                if len(dst):
                    block[dst] = store[part[dst, 1]]
            yield block


def _build_faiss(emb, kind: str, summary: BuildSummary):
    """Build `kind`; an approximate type that cannot be trained on so few vectors falls back to exact search.

    Why: IVF/PQ need enough vectors to train their quantizers (PQ: 16 per sub-quantizer at 4 bits),
    and on a handful of images exact search is also the fastest answer.
    """
    try:
        return faiss_index.build_tuned(emb, kind), kind
    except RuntimeError as exc:
        if kind == "flat":
            raise
        why = str(exc).strip().splitlines()
        summary.index_type_note = (f"{kind} cannot be trained on {len(emb)} image(s) "
                                   f"({why[-1][:100] if why else 'faiss error'}); built flat (exact search) instead")
        return faiss_index.build_tuned(emb, "flat"), "flat"


def _write_generation(store: IndexDir, files: dict[str, str], blocks: Iterator[np.ndarray],
                      rows: int, dim: int, kind: str, summary: BuildSummary) -> tuple[dict[str, dict], Any, str]:
    """Write the generation's data files -- (items already written), embedding shards streamed block by block, then the
    FAISS index built from those shards -- so memory stays bounded at any collection size; on any
    failure remove them all (the manifest still names the old ones)."""
    from index.integrity import embedding_keys, file_check
    from index.shards import Shards, ShardWriter
    from index.store import atomic_path

    try:
        shard_paths = [store.path / files[key] for key in embedding_keys(files)]
        writer = ShardWriter(shard_paths, rows, dim)
        for block in blocks:
            writer.write(block)
        writer.close()
        emb = Shards(shard_paths)
        try:
            built, kind = _build_faiss(emb, kind, summary)
        finally:
            emb.close()  # its descriptors would keep the removed files of a failed build on disk
        with atomic_path(store.path / files["faiss"]) as tmp:
            faiss_index.write(built.index, tmp)
        return {key: file_check(store.path / name) for key, name in files.items()}, built, kind
    except BaseException:
        for name in files.values():
            (store.path / name).unlink(missing_ok=True)
        raise


def _next_generation(store: IndexDir, prev_manifest: dict | None) -> int:
    """One past the previous generation and past any data file on disk (a damaged manifest may have lost it)."""
    import re

    numbers = [(prev_manifest or {}).get("generation", 0)]
    for entry in store.path.iterdir():
        match = re.fullmatch(r"(?:items|embeddings|faiss)-(\d+)(?:-\d+)?\.\w+", entry.name)
        if match:
            numbers.append(int(match.group(1)))
    return max(numbers) + 1
