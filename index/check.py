"""`discff index check`: every data file of the published generation verified in depth.

Why apart from `integrity`: the check opens the index through `store`, which itself uses
`integrity`'s findings; living here, neither of those two imports the other back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from index.errors import IndexDamaged
from index.integrity import check_files, data_keys
from index.store import MANIFEST, IndexDir


def check_index(index_dir: Path) -> dict[str, Any]:
    """Everything `discff index check` reports: each data file verified in depth, problems listed.

    Raises IndexMissing when there is no index at all; a damaged manifest is reported as a problem.
    """
    store = IndexDir(index_dir)
    if not store.exists():
        store.read_manifest()  # raises IndexMissing with the usual sentence
    report: dict[str, Any] = {"generation": None, "count": None, "files": [], "problems": []}
    try:
        manifest = store.read_manifest()
    except IndexDamaged as exc:
        report["problems"] = [{"file": p.file, "problem": p.what} for p in exc.problems] or \
            [{"file": MANIFEST, "problem": str(exc)}]
        return report
    report.update(generation=manifest["generation"], count=manifest["count"],
                  files=[manifest["files"][k] for k in data_keys(manifest)])
    problems = check_files(index_dir, manifest, deep=True)
    bad = {p.file for p in problems}
    readers = (("items", store.read_items), ("embeddings", lambda m: store.read_embeddings(m, mmap=True)),
               ("faiss", store.read_faiss))
    for key, read in readers:
        if any(manifest["files"][k] in bad for k in data_keys(manifest) if k.split(".")[0] == key):
            continue
        try:
            read(manifest)
        except IndexDamaged as exc:
            problems += exc.problems
    if not isinstance(manifest.get("checks"), dict):
        report["note"] = "written before checksums were recorded: only structure was checked"
    report["problems"] = [{"file": p.file, "problem": p.what} for p in problems]
    return report
