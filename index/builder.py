"""`index build`: scan a folder, embed what is new, and publish a new index generation.

Work is decided per file:
  unchanged  same path, size and mtime as in the index (or in an unfinished build's chunks)
  reused     new path or new mtime, but the content hash is already known (rename, touch, copy)
  embedded   decoded in DataLoader workers and embedded with CLIP, one chunk file per batch
  skipped    could not be decoded; recorded with its reason, the build goes on
Chunks in `pending/` make an interrupted build resume where it stopped; they are folded into
the index and deleted once the new generation is published.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from index import faiss_index
from index.errors import IndexDamaged, IndexError_, ModelMismatch
from index.imageio import DEFAULT_MAX_PIXELS
from index.scan import FileEntry, hash_many, scan_folder
from index.store import FORMAT_VERSION, IndexDir, Items, atomic_write_bytes, writer_lock

RECORD_KEYS = ("path", "size", "mtime_ns", "hash", "width", "height", "status", "error")


class BuildInterrupted(RuntimeError):
    """Raised by the `fail_after_batches` test hook to simulate a killed build."""


@dataclass
class BuildOptions:
    """What to index and how (the CLI fills this from its options)."""

    root: Path
    index_dir: Path
    clip_spec: str                      # as recorded in the manifest ("demo", a path, or NAME/PRETRAINED)
    model: str | None = None            # Stable Diffusion model recorded for --rerank
    batch_size: int = 64
    workers: int | None = None          # None: up to 4 when there is enough work
    max_memory: int = 8 << 30
    max_pixels: int = DEFAULT_MAX_PIXELS
    index_type: str | None = None       # force flat/hnsw/ivf_flat/ivf_pq instead of choosing
    rebuild: bool = False
    fail_after_batches: int | None = None
    # Where decoding and CLIP run instead of this process (index/ray_embed.py): called with
    # (opts, files to embed, known hashes), yields (embeddings of the good files, per-file meta as
    # DecodeDataset makes it, embed seconds) per finished batch; the builder records each as locally.
    embedder: Callable[["BuildOptions", list[FileEntry], dict], Iterator[tuple[np.ndarray, list[dict], float]]] | None = None


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


class _Pending:
    """Chunk files of embedded batches, so a killed build loses at most one batch."""

    def __init__(self, store: IndexDir, session: dict[str, Any]) -> None:
        from index.shards import RowSpool

        self.dir = store.pending
        self.session = session
        self.seq = 0
        # every vector this build holds (resumed or new), on disk until published; ("vec", id) refers to it
        self.spool = RowSpool(self.dir / "spool.f16", session["dim"])

    def load(self) -> dict[str, tuple[dict, int | None]]:
        """Records of a previous unfinished build of the same folder with the same CLIP (else discard).

        Anything that does not read back exactly as `add` wrote it -- a session file or chunk cut
        half-way, garbage, a chunk whose rows do not match its records -- is deleted and its files
        are simply embedded again.
        """
        found: dict[str, tuple[dict, int | None]] = {}
        session_file = self.dir / "session.json"
        if not self.dir.is_dir():
            return found
        try:
            same = json.loads(session_file.read_bytes().decode()) == self.session
        except (OSError, ValueError, RecursionError):
            same = False
        if not same:
            self.clear()
            return found
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            parsed = self._read_chunk(chunk)
            if parsed is None:
                chunk.unlink(missing_ok=True)
                continue
            seq, records, emb = parsed
            self.seq = max(self.seq, seq + 1)
            row = self.spool.append(emb)
            for rec in records:
                vec = None
                if rec["status"] == "ok":
                    vec, row = row, row + 1
                found[rec["path"]] = (rec, vec)
        return found

    def _read_chunk(self, chunk: Path) -> tuple[int, list[dict], np.ndarray] | None:
        """(sequence number, records, embeddings) of one chunk file, or None when it is not intact."""
        try:
            seq = int(chunk.stem.split("-")[1])
            with np.load(chunk, allow_pickle=False) as data:
                records = json.loads(bytes(data["meta"]).decode())
                emb = np.asarray(data["emb"])
        except Exception:  # BadZipFile, ValueError, OSError, KeyError, RecursionError...: redo the chunk
            return None
        if not isinstance(records, list) or not all(_valid_record(r) for r in records):
            return None
        n_ok = sum(1 for r in records if r["status"] == "ok")
        if emb.ndim != 2 or emb.shape != (n_ok, self.session["dim"]) or not np.isfinite(emb).all():
            return None
        return seq, records, emb

    def add(self, records: list[dict], emb: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        session_file = self.dir / "session.json"
        if not session_file.is_file():
            atomic_write_bytes(session_file, json.dumps(self.session, sort_keys=True).encode())
        import io

        buffer = io.BytesIO()
        np.savez(buffer, emb=emb.astype(np.float16), meta=np.frombuffer(json.dumps(records).encode(), np.uint8))
        atomic_write_bytes(self.dir / f"chunk-{self.seq:08d}.npz", buffer.getvalue())
        self.seq += 1

    def clear(self) -> None:
        self.spool.close()
        self.spool.count = 0
        shutil.rmtree(self.dir, ignore_errors=True)


def _valid_record(rec: Any) -> bool:
    """A record as `_record` makes it (what a resume chunk must hold)."""
    return (isinstance(rec, dict) and all(k in rec for k in RECORD_KEYS) and isinstance(rec["path"], str)
            and rec["status"] in ("ok", "error") and isinstance(rec["size"], int) and isinstance(rec["mtime_ns"], int))


def _record(entry: FileEntry, **values: Any) -> dict[str, Any]:
    rec = {"path": entry.rel, "size": entry.size, "mtime_ns": entry.mtime_ns, "hash": None, "width": None,
           "height": None, "status": "ok", "error": None}
    rec.update(values)
    return rec


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


def _build_locked(opts: BuildOptions, clip, store: IndexDir, events: BuildEvents, start: float) -> BuildSummary:
    summary = BuildSummary()
    prev_manifest, prev_by_path, prev_emb = _read_previous(opts, clip, store, summary)
    pending = _Pending(store, {"root": str(opts.root), "clip": clip.fingerprint, "dim": clip.dim,
                               "max_pixels": opts.max_pixels})
    if opts.rebuild:
        pending.clear()
    resumed = pending.load()

    events.on_stage("Scanning")
    scan = scan_folder(opts.root)
    entries = scan.entries
    summary.files = len(entries) + len(scan.skipped)
    summary.safe_names = scan.renamed
    final: dict[str, tuple[dict, tuple[str, Any] | None]] = {}
    for rel, reason in scan.skipped:  # recorded like an unreadable image, with the reason
        final[rel] = (_record(FileEntry(rel, 0, 0), status="error", error=reason), None)
        events.on_skip(rel, reason)
    candidates = _match_by_stat(entries, prev_by_path, resumed, final, summary)
    todo, hashes = _match_by_hash(opts, candidates, prev_by_path, resumed, final, summary, events)
    _count_moves(entries, prev_by_path, final, summary)
    embed_seconds = _embed(opts, clip, todo, hashes, pending, final, summary, events)
    summary.duplicates += _copies_among(todo, final)

    for rec, _ in final.values():
        if rec["status"] != "ok":
            summary.skipped += 1
            summary.skipped_files.append((rec["path"], rec["error"]))
    events.on_stage("Building the FAISS index")
    manifest = _publish(opts, clip, store, prev_manifest, final, prev_emb, pending.spool, summary)
    pending.clear()
    summary.seconds = time.perf_counter() - start
    summary.embed_seconds = embed_seconds
    summary.images_per_second = len(todo) / max(summary.seconds, 1e-9) if todo else 0.0
    summary.index_type = manifest["faiss"]["type"]
    summary.recall_at_10 = manifest["faiss"]["recall_at_10"]
    return summary


def _read_previous(opts: BuildOptions, clip, store: IndexDir,
                   summary: BuildSummary) -> tuple[dict | None, dict[str, dict], Any]:
    """The published index this build updates: (manifest, records by path, mmapped embeddings).

    A damaged generation is repaired, not refused: what is wrong goes into `summary.repaired`,
    and whatever is intact is used -- with the items table and embeddings intact every embedding
    is reused (only the FAISS file is rebuilt); with the embeddings lost, files are embedded again.
    """
    from index.integrity import check_files, embedding_keys

    if not store.exists() or opts.rebuild:
        return None, {}, None
    try:
        manifest = store.read_manifest()
    except IndexDamaged as exc:
        summary.repaired = [p.sentence() for p in exc.problems]
        manifest = store.read_backup_manifest()  # its files verified: that generation is reused whole
        if manifest is None:
            return None, {}, None
    _check_compatible(manifest, opts, clip)
    # the FAISS file is rebuilt by every build: only what is reused is verified byte for byte
    problems = check_files(store.path, manifest, deep=True, deep_keys=("items", "embeddings"))
    bad = {p.file for p in problems}
    items = emb = None
    try:
        if manifest["files"]["items"] not in bad:
            items = store.read_items(manifest)
        if not any(manifest["files"][key] in bad for key in embedding_keys(manifest["files"])):
            emb = store.read_embeddings(manifest, mmap=True)
    except IndexDamaged as exc:
        problems += exc.problems
    summary.repaired += [p.sentence() for p in problems]
    if items is None:
        return manifest, {}, None
    records = items.records()
    if emb is None:  # sizes, hashes and errors are still known; the vectors must be made again
        records = [r for r in records if r["status"] != "ok"]
    return manifest, {rec["path"]: rec for rec in records}, emb


def _count_moves(entries: list[FileEntry], prev_by_path: dict[str, dict], final: dict,
                 summary: BuildSummary) -> None:
    """Tell renames from duplicates and count what was removed.

    A new path whose content came from the previous index is a rename when a path with that
    content is gone (each gone path pays for one rename), else a duplicate; every other gone
    path is removed -- including a deleted copy whose content is still indexed elsewhere.
    """
    from collections import Counter

    current = {e.rel for e in entries}
    gone = Counter(rec["hash"] for path, rec in prev_by_path.items() if path not in current)
    for rel in sorted(final):
        rec, source = final[rel]
        if rel in prev_by_path or source is None or source[0] != "prev" or rel not in current:
            continue
        if gone[rec["hash"]] > 0:
            gone[rec["hash"]] -= 1
            summary.renamed += 1
        else:
            summary.duplicates += 1
    summary.removed = sum(gone.values())


def _copies_among(embedded: list[FileEntry], final: dict) -> int:
    """Files embedded in this run whose content another file embedded in this run already has.

    Why: `_count_moves` finds duplicates of content the previous index held; identical files that
    are all new (a first build) were embedded side by side and reported as `duplicates 0`."""
    from collections import Counter

    hashes = Counter(final[e.rel][0]["hash"] for e in embedded
                     if e.rel in final and final[e.rel][0]["status"] == "ok" and final[e.rel][0]["hash"])
    return sum(count - 1 for count in hashes.values())


def _same_stat(rec: dict | None, entry: FileEntry) -> bool:
    return bool(rec) and rec["size"] == entry.size and rec["mtime_ns"] == entry.mtime_ns


def _match_by_stat(entries: list[FileEntry], prev_by_path: dict[str, dict], resumed: dict, final: dict,
                   summary: BuildSummary) -> list[FileEntry]:
    """Keep files whose path, size and mtime match the index or a resumed chunk; return the rest.

    Why: stat is free, so most of an unchanged collection is settled without reading a byte.
    """
    candidates: list[FileEntry] = []
    for entry in entries:
        old = prev_by_path.get(entry.rel)
        res = resumed.get(entry.rel)
        if _same_stat(old, entry):
            source = ("prev", old["row"]) if old["status"] == "ok" else None
            final[entry.rel] = (_record(entry, **{k: old[k] for k in RECORD_KEYS[3:]}), source)
            summary.unchanged += old["status"] == "ok"
        elif _same_stat(res[0] if res else None, entry):
            final[entry.rel] = (res[0], ("vec", res[1]) if res[0]["status"] == "ok" else None)
            summary.indexed += res[0]["status"] == "ok"
            summary.resumed += 1
        else:
            candidates.append(entry)
    return candidates


def _known_content(prev_by_path: dict[str, dict], resumed: dict) -> tuple[dict, dict]:
    """Embeddings and sizes of every readable image already seen, keyed by content hash."""
    known_hash: dict[str, tuple[str, Any]] = {}   # hash -> ("prev", row) | ("vec", spool row)
    known_size: dict[str, tuple[Any, Any]] = {}   # hash -> (width, height)
    for rec in prev_by_path.values():
        if rec["status"] == "ok" and rec["hash"]:
            known_hash[rec["hash"]] = ("prev", rec["row"])
            known_size[rec["hash"]] = (rec["width"], rec["height"])
    for rec, vec in resumed.values():
        if rec["status"] == "ok" and rec["hash"]:
            known_hash.setdefault(rec["hash"], ("vec", vec))
            known_size.setdefault(rec["hash"], (rec["width"], rec["height"]))
    return known_hash, known_size


def _match_by_hash(opts: BuildOptions, candidates: list[FileEntry], prev_by_path: dict[str, dict],
                   resumed: dict, final: dict, summary: BuildSummary,
                   events: BuildEvents) -> tuple[list[FileEntry], dict[str, str | None]]:
    """Reuse the embedding of a renamed, touched or copied file; return what must be embedded.

    Files are hashed only when something is known to match against, so a first build reads
    every image once (to decode it), not twice.
    """
    known_hash, known_size = _known_content(prev_by_path, resumed)
    hashes: dict[str, str | None] = {}
    if known_hash and candidates:
        events.on_stage("Hashing changed files")
        hashes = hash_many(opts.root, [e.rel for e in candidates])
    todo: list[FileEntry] = []
    for entry in candidates:
        h = hashes.get(entry.rel)
        old = prev_by_path.get(entry.rel)
        if h is not None and h in known_hash:
            width, height = known_size[h]
            final[entry.rel] = (_record(entry, hash=h, width=width, height=height), known_hash[h])
            summary.unchanged += old is not None  # touched; a new path is a rename or a duplicate
            summary.reused_by_hash += 1
        elif old and h is not None and old["hash"] == h and old["status"] != "ok":
            final[entry.rel] = (_record(entry, **{k: old[k] for k in RECORD_KEYS[3:]}), None)
        else:
            todo.append(entry)
    return todo, hashes


def _embed(opts: BuildOptions, clip, todo: list[FileEntry], hashes: dict, pending: _Pending,
           final: dict, summary: BuildSummary, events: BuildEvents) -> float:
    """Decode in workers, embed in the main process (or in `opts.embedder`), persist each batch as a chunk."""
    from index.dataset import DecodeDataset, make_loader

    if not todo:
        return 0.0
    if opts.embedder is not None:
        events.on_stage("Embedding")
        events.on_embed_start(len(todo))
        return _embed_batches(opts, todo, opts.embedder(opts, todo, hashes), pending, final, summary, events)
    workers = opts.workers
    if workers is None:
        workers = 0 if len(todo) < 2 * opts.batch_size else min(4, os.cpu_count() or 1)
    dataset = DecodeDataset(opts.root, [e.rel for e in todo], clip.preprocess, opts.max_pixels,
                            [hashes.get(e.rel) for e in todo])
    loader = make_loader(dataset, opts.batch_size, workers, pin_memory=clip.device.startswith("cuda"))
    events.on_stage("Embedding")
    events.on_embed_start(len(todo))
    with _share_cores(clip.device, workers):
        return _embed_batches(opts, todo, _local_batches(clip, loader), pending, final, summary, events)


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


def _embed_batches(opts: BuildOptions, todo: list[FileEntry], batches: Iterator, pending: _Pending, final: dict,
                   summary: BuildSummary, events: BuildEvents) -> float:
    try:
        return _record_batches(opts, todo, batches, pending, final, summary, events)
    finally:  # stop decode workers (or Ray) now, also on error: their inherited fds would hold the lock
        getattr(batches, "close", lambda: None)()


def _record_batches(opts: BuildOptions, todo: list[FileEntry], batches: Iterator, pending: _Pending, final: dict,
                    summary: BuildSummary, events: BuildEvents) -> float:
    embed_seconds = 0.0
    for batch_no, (emb, meta, seconds) in enumerate(batches):
        if opts.fail_after_batches is not None and batch_no >= opts.fail_after_batches:
            raise BuildInterrupted(f"simulated interruption after {batch_no} batches")
        embed_seconds += seconds
        records, row = [], pending.spool.append(emb)
        for item in meta:
            entry = todo[item["i"]]
            summary.decode_seconds += item["seconds"]
            if item["ok"]:
                rec = _record(entry, hash=item["hash"], width=item["width"], height=item["height"])
                final[entry.rel] = (rec, ("vec", row))
                row += 1
                summary.indexed += 1
            else:
                rec = _record(entry, hash=item["hash"], status="error", error=item["error"])
                final[entry.rel] = (rec, None)
                events.on_skip(entry.rel, item["error"])
            records.append(rec)
        pending.add(records, emb)
        events.on_batch(len(meta))
    return embed_seconds


def _publish(opts: BuildOptions, clip, store: IndexDir, prev_manifest: dict | None, final: dict,
             prev_emb, spool, summary: BuildSummary) -> dict[str, Any]:
    """Write the new generation (items, embeddings, FAISS) under temp names, then swap the manifest."""
    records, sources = [], []
    for path in sorted(final):
        rec, source = final[path]
        rec = dict(rec, row=-1)
        if rec["status"] == "ok":
            rec["row"] = len(sources)
            sources.append(source)
        records.append(rec)
    n = len(sources)
    gpu = faiss_index.gpu_available()  # recorded in the manifest: IVF training ran on it
    kind = opts.index_type or faiss_index.choose_index_type(n, clip.dim, opts.max_memory)
    gen = _next_generation(store, prev_manifest)
    files = _generation_files(gen, n)
    checks, built, kind = _write_generation(store, files, records, _embedding_blocks(sources, prev_emb, spool, clip.dim),
                                            n, clip.dim, kind, summary)
    model = opts.model or (prev_manifest or {}).get("model")
    manifest = {
        "format_version": FORMAT_VERSION,
        "generation": gen,
        "root": str(opts.root),
        "clip": {"spec": opts.clip_spec, "fingerprint": clip.fingerprint, "dim": clip.dim},
        "model": model,
        "count": n,
        "files_seen": len(records),
        "errors": sum(1 for r in records if r["status"] != "ok"),
        "max_pixels": opts.max_pixels,
        "faiss": {"type": kind, "params": built.params, "recall_at_10": round(built.recall_at_10, 4),
                  "recall_queries": built.recall_queries, "gpu": gpu, "tuning": built.tuning,
                  "build_seconds": round(built.build_seconds, 3)},
        "files": files,
        "checks": checks,
        "created": (prev_manifest or {}).get("created", _now()),
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


def _generation_files(gen: int, rows: int) -> dict[str, str]:
    """The data file names of generation `gen`: one embeddings shard per SHARD_ROWS rows."""
    from index.shards import shard_count, shard_names

    shards = shard_names(f"embeddings-{gen}", shard_count(rows))
    files = {"items": f"items-{gen}.parquet", "embeddings": shards[0], "faiss": f"faiss-{gen}.index"}
    files.update({f"embeddings.{i}": name for i, name in enumerate(shards) if i})
    return files


def _embedding_blocks(sources: list, prev_emb, spool, dim: int, rows: int = 65536) -> Iterator[np.ndarray]:
    """The new generation's embeddings, `rows` at a time: reused rows read from the previous
    generation's shards, new ones from this build's spool (both gathered in sorted reads)."""
    for start in range(0, len(sources), rows):
        part = sources[start:start + rows]
        block = np.zeros((len(part), dim), np.float16)
        for kind, store in (("prev", prev_emb), ("vec", spool)):
            pairs = [(i, s[1]) for i, s in enumerate(part) if s[0] == kind]
            if pairs:
                dst, src = map(np.asarray, zip(*pairs))
                block[dst] = store[src]
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


def _write_generation(store: IndexDir, files: dict[str, str], records: list[dict], blocks: Iterator[np.ndarray],
                      rows: int, dim: int, kind: str, summary: BuildSummary) -> tuple[dict[str, dict], Any, str]:
    """Write the generation's data files -- items, embedding shards streamed block by block, then the
    FAISS index built from those shards -- so memory stays bounded at any collection size; on any
    failure remove them all (the manifest still names the old ones)."""
    from index.integrity import embedding_keys, file_check
    from index.shards import Shards, ShardWriter
    from index.store import atomic_path

    try:
        store.write_items(Items.from_records(records), files["items"])
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
