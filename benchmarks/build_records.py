"""Peak memory of `index build`'s per-file bookkeeping at N files: a first build and an update.

    python benchmarks/build_records.py --files 10000000 --out docs/results/index/build_records_10M.json

Scan and match only, no decoding: N synthetic camera-roll records (sorted, as the scan yields
them) go through the builder's own sorted merge (index/plan.py) and its items writer
(index/builder._write_items), each phase in a fresh process so its peak RSS is its own:

  first   merge against no previous generation; every image a candidate whose embedded record
          arrives as `Pending.this_run` yields it; the items table and embedding sources written
  update  the next scan of the same collection with 1% of the files touched (new mtime, same
          content: found by hash), 1% deleted and 1% new, merged against the first build's items
          table; the hash lookup pass over that table; the new items table written

Before the merge was streamed, a first build held 1,188 bytes of Python records per file
(11 GiB at 10M files).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MTIME = 1_700_000_000 * 10**9


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rel(i: int, suffix: str = "") -> str:
    return f"photos/album{i // 1000:05d}/IMG_{i:08d}{suffix}.jpg"


def _hash(i: int) -> str:
    return f"{i:032x}"


def _first_scan(n: int) -> Iterator:
    from index.scan import FileEntry

    for i in range(n):
        yield FileEntry(_rel(i), 2_500_000 + i, MTIME + i)


def _update_scan(n: int) -> Iterator:
    """The collection a while later: every 100th file touched, every 100th (offset 50) gone, a new
    file after every 100th (offset 25)."""
    from index.scan import FileEntry

    for i in range(n):
        if i % 100 != 50:
            yield FileEntry(_rel(i), 2_500_000 + i, MTIME + i + (10**9 if i % 100 == 0 else 0))
        if i % 100 == 25:
            yield FileEntry(_rel(i, "b"), 3_000_000 + i, MTIME + i)


class _Embedded:
    """What the embedding stage leaves for `_write_items`: this run's records in candidate order
    (made on the fly here, as they would be read back from the resume chunks), and their spool rows."""

    def __init__(self, folder: Path, plan, hashes: dict[int, str]) -> None:
        self.dir, self.plan, self.hashes, self.first_row = folder, plan, hashes, 0

    def this_run(self) -> Iterator[dict]:
        from index.plan import entry_of, record

        for c, cand in enumerate(self.plan.cands):
            if c not in self.hashes:  # the file number's hash: the update finds touched files by it
                number = int(cand["path"][-12:-4]) if cand["path"][-5] != "b" else 10**12 + c
                yield record(entry_of(cand), hash=_hash(number), width=4032, height=3024)


def _phase(kind: str, n: int, work: Path) -> dict:
    from index.builder import BuildSummary, _write_items
    from index.plan import known_content, merge
    from index.records import iter_items
    from index.store import IndexDir

    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    previous = iter_items(work / "items-1.parquet") if kind == "update" else iter(())
    scan = _first_scan(n) if kind == "first" else _update_scan(n)
    plan = merge(scan, previous, {}, work / kind, lambda rel, why: None)
    merged = time.perf_counter()
    resolved: dict = {}
    if kind == "update":  # the touched files hash to content the previous generation holds
        from index.plan import entry_of, record

        wanted = {_hash(int(c["path"][-12:-4])): c_i for c_i, c in enumerate(plan.cands) if c["old"] is not None}
        known = known_content(set(wanted), iter_items(work / "items-1.parquet"), {})
        for h, c in wanted.items():
            kind_, row, width, height = known[h]
            resolved[c] = (record(entry_of(plan.cands[c]), hash=h, width=width, height=height), (kind_, row), False)
    hashed = time.perf_counter()
    summary = BuildSummary()
    name = "items-1.parquet" if kind == "first" else "items-2.parquet"
    rows, seen, _ = _write_items(IndexDir(work), name, plan, resolved, _Embedded(work / kind, plan, resolved), summary)
    plan.close()
    return {"phase": kind, "files": plan.counts.files, "unchanged": plan.counts.unchanged,
            "candidates": len(plan.cands), "reused_by_hash": len(resolved), "removed": summary.removed,
            "rows": rows, "seen": seen, "merge_s": round(merged - start, 1), "hash_lookup_s": round(hashed - merged, 1),
            "write_s": round(time.perf_counter() - hashed, 1), "peak_rss_bytes": peak_rss(),
            "peak_rss_gib": round(peak_rss() / 2**30, 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/discff-build-records"))
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--phase", choices=("first", "update"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        print(json.dumps(_phase(args.phase, args.files, args.work)))
        return
    results = []
    for phase in ("first", "update"):
        out = subprocess.run([sys.executable, __file__, "--files", str(args.files), "--work", str(args.work),
                              "--phase", phase], check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/build_records.py", *sys.argv[1:]]),
                                        "machine": "2-core CPU", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
