"""Peak memory and time of `index build` over one parquet file of N image rows (img2dataset layout).

    python benchmarks/parquet_build.py --rows 1000000 --out docs/results/index/parquet_build_1M.json

The real builder (index/builder.build_index) runs end to end -- the scan reads the image column a
row group at a time, the sorted merge, the candidate spool, resume chunks, the items table, the
embedding shards and a flat FAISS index -- with a stub in place of CLIP: the embedding hook reads
every row's bytes, caption and metadata in place (index/parquet.read_row, as the decoding workers
do) and hashes them, but makes a 16-d vector from the hash instead of decoding and embedding (a
million real CLIP passes do not fit on a 2-core CPU; decoding memory is per batch, not per row).
Each phase runs in a fresh process, so its peak RSS is its own:

  first      a first build of the file
  unchanged  the same file again (same size and mtime): its records are kept, no row is read
  changed    the file rewritten with 1% more rows: every row is a candidate, found by its hash
             (only the new rows are "embedded")

Rows are 64-byte unique blobs with a caption and key/url columns, in row groups of 10,000 rows
(img2dataset's shard size).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 16
GROUP = 10_000


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_file(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("key", pa.string()), ("jpg", pa.binary()), ("caption", pa.string()), ("url", pa.string())])
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, rows, GROUP):
            ids = range(start, min(rows, start + GROUP))
            writer.write_table(pa.table({
                "key": [f"{i:09d}" for i in ids],
                "jpg": [b"\xff\xd8" + i.to_bytes(8, "little") * 7 + b"\xff\xd9" for i in ids],
                "caption": [f"a photo number {i} of a red cube left of a blue ball" for i in ids],
                "url": [f"https://example.com/images/{i}.jpg" for i in ids]}, schema=schema))


class StubClip:
    fingerprint, dim, device, preprocess = "stub-clip", DIM, "cpu", None


def stub_embedder(opts, todo, hashes, batch: int = 4096):
    """(vectors, per-row meta, seconds) per batch, reading each row in place as DecodeDataset does."""
    import numpy as np

    from index.scan import digest, entry_bytes, read_sidecars

    for start in range(0, len(todo), batch):
        meta, vectors = [], []
        for i in range(start, min(len(todo), start + batch)):
            entry = todo[i]
            data = entry_bytes(opts.root, entry)
            h = hashes.get(entry.rel) or digest(data)
            vectors.append(np.frombuffer(bytes.fromhex(h), np.uint8)[:DIM].astype(np.float32) - 127.5)
            meta.append({"i": i, "ok": True, "hash": h, "width": 8, "height": 8, "error": None, "seconds": 0.0,
                         **read_sidecars(opts.root, entry)})
        emb = np.stack(vectors)
        yield emb / np.linalg.norm(emb, axis=1, keepdims=True), meta, 0.0


def phase(kind: str, rows: int, work: Path) -> dict:
    from index.builder import BuildOptions, build_index

    data = work / "data" / "part-00000.parquet"
    if kind == "first":
        shutil.rmtree(work, ignore_errors=True)
        write_file(data, rows)
    elif kind == "changed":
        write_file(data, rows + rows // 100)
    opts = BuildOptions(root=work / "data", index_dir=work / "idx", clip_spec="stub", index_type="flat",
                        embedder=stub_embedder)
    start = time.perf_counter()
    summary = build_index(opts, StubClip())
    return {"phase": kind, "rows": summary.files, "indexed": summary.indexed, "unchanged": summary.unchanged,
            "reused_by_hash": summary.reused_by_hash, "skipped": summary.skipped,
            "seconds": round(time.perf_counter() - start, 1), "file_bytes": data.stat().st_size,
            "peak_rss_bytes": peak_rss(), "peak_rss_gib": round(peak_rss() / 2**30, 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/discff-parquet-build"))
    p.add_argument("--phases", default="first,unchanged,changed")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        print(json.dumps(phase(args.phase, args.rows, args.work)))
        return
    results = []
    for kind in args.phases.split(","):
        out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--work", str(args.work),
                              "--phase", kind], check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/parquet_build.py", *sys.argv[1:]]),
                                        "machine": "2-core CPU (shared, nice 19)", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
