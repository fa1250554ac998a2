"""Memory of `index build`'s per-file bookkeeping: bytes per file of the records a first build holds.

    python benchmarks/build_records.py --files 200000

The vectors of a build stream through disk (index/shards.py); what still grows with the number of
files is the Python bookkeeping the builder matches the scan against (scan entries, the record of
every file, the sorted records it publishes). This builds exactly those objects for N synthetic
camera-roll paths with the builder's own `_record` and reports the resident-set growth per file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200_000)
    n = p.parse_args(argv).files

    from index.builder import _record
    from index.scan import FileEntry

    before = resident_bytes()
    entries = [FileEntry(f"photos/2024/album{i // 1000:04d}/IMG_{i:08d}.jpg", 2_500_000 + i, 1_700_000_000 * 10**9 + i)
               for i in range(n)]
    final = {e.rel: (_record(e, hash=f"{i:032x}", width=4032, height=3024), ("vec", i)) for i, e in enumerate(entries)}
    records = [dict(final[path][0], row=row) for row, path in enumerate(sorted(final))]
    grown = resident_bytes() - before
    print(f"{n:,} files: {grown / n:,.0f} bytes per file of build bookkeeping "
          f"({len(records):,} records; 10M files would need {grown / n * 1e7 / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
