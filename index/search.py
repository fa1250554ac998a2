"""Query an index: text embedding in, ranked image paths with CLIP scores out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index import faiss_index
from index.errors import IndexError_, ModelMismatch
from index.store import IndexDir


@dataclass
class Hit:
    """One search result; `path` is the absolute file path (root of the index + relative path)."""

    rank: int
    path: str
    rel: str
    clip_score: float
    row: int


class SearchIndex:
    """A published index generation opened for reading with bounded memory: paths as one Arrow
    column, embeddings as shards read on demand (the refine step), FAISS memory-mapped."""

    def __init__(self, index_dir: str | Path) -> None:
        self.store = IndexDir(index_dir)
        self.manifest: dict[str, Any] = self.store.read_manifest()
        self.store.check(self.manifest)  # sizes only: cheap enough for every query
        self.rel_by_row = self.store.read_paths(self.manifest)
        self.root = Path(self.manifest["root"])
        named = self.manifest.get("parquet_columns") or {}
        if any(named.values()):  # parquet rows under the root are read with the columns the build named
            from index.parquet import remember_columns

            remember_columns(self.root, named.get("image"), named.get("caption"))
        self.embeddings = self.store.read_embeddings(self.manifest, mmap=True)
        info = self.manifest["faiss"]
        self.kind, self.params = info["type"], info["params"]
        self.index = self.store.read_faiss(self.manifest)

    @property
    def clip_spec(self) -> str:
        return self.manifest["clip"]["spec"]

    def check_clip(self, clip) -> None:
        """The query must be encoded by the CLIP that embedded the images."""
        if clip.fingerprint != self.manifest["clip"]["fingerprint"]:
            raise ModelMismatch(
                f"The index at '{self.store.path}' was built with CLIP '{self.clip_spec}' "
                f"(fingerprint {self.manifest['clip']['fingerprint'][:12]}), but the query model '{clip.name}' has "
                f"other weights ({clip.fingerprint[:12]}); search with the index's model or rebuild the index."
            )

    def sidecars(self, rows: list[int]) -> dict[int, dict[str, str | None]]:
        """{row: {"caption", "json"}} of the sample each row's image came with (a webdataset shard's
        txt/json, or a.txt/a.json beside a.jpg); None where there was none.

        Why a separate call: most searches print paths only. Rows grow with the path order the items
        table is written in, so the row-group statistics let this read only the groups holding them.
        """
        import pyarrow.parquet as pq

        if not rows:
            return {}
        path = self.store.file(self.manifest, "items")
        if "caption" not in pq.ParquetFile(path).schema_arrow.names:  # an index built before captions were kept
            return {int(r): {"caption": None, "json": None} for r in rows}
        table = pq.read_table(path, columns=["row", "caption", "json"], filters=[("row", "in", [int(r) for r in rows])])
        return {rec["row"]: {"caption": rec["caption"], "json": rec["json"]} for rec in table.to_pylist()}

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k hits per query vector."""
        if self.index.ntotal == 0:
            raise IndexError_(f"The index at '{self.store.path}' holds no images; build it from a folder with images.")
        scores, ids = faiss_index.search(self.index, self.kind, self.params, queries, k, self.embeddings)
        results = []
        for row_scores, row_ids in zip(scores, ids):
            hits = []
            for score, idx in zip(row_scores, row_ids):
                if idx < 0:
                    continue
                rel = self.rel_by_row[idx]
                hits.append(Hit(len(hits) + 1, str(self.root / rel), rel, float(score), int(idx)))
            results.append(hits)
        return results


def search_text(index: SearchIndex, clip, query: str, k: int) -> list[Hit]:
    """Encode `query` with `clip` (checked against the index) and return the top-k hits."""
    index.check_clip(clip)
    return index.search_vectors(clip.embed_texts([query]), k)[0]
