"""Choosing, building, tuning and querying the FAISS index.

Index types, from small to huge collections:
    flat      exact inner product (IndexFlatIP); the answer is the brute-force top-k
    hnsw      graph search (IndexHNSWFlat, inner product); no training, ~+256 B/vector; only on request
              (`--index-type hnsw`): measured slower and less exact than ivf_flat, see choose_index_type
    ivf_flat  inverted lists over full vectors; the automatic choice above 50k vectors
    ivf_pq    inverted lists over product-quantised codes; the shortlist is re-scored exactly from the
              float16 embeddings on disk (memory-mapped), so RAM holds only the codes
The search-time knob of each approximate type (efSearch / nprobe) is raised until recall@10
against exact search on a sample of queries reaches the target, and the measured recall is kept.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INDEX_TYPES = ("flat", "hnsw", "ivf_flat", "ivf_pq")
FLAT_MAX = 50_000          # exact search stays ~ms per query below this on one core
RECALL_TARGET = 0.98       # tuned on the sample so that unseen queries still clear 0.95
REFINE_FACTOR = 10         # ivf_pq: exact re-scoring of k * REFINE_FACTOR candidates
MAX_REFINE = 640           # 6,400 rows re-scored for k=10: ~6 MB read from the shards per query
HNSW_M = 16
# On a CPU, filling an IVF costs n * nlist * d multiply-adds for the coarse assignment (and k-means
# as much per iteration on its sample): at 10M x 512 on 2 cores (~150 GFLOP/s) nlist = 4 * sqrt(n) =
# 12,649 would take about an hour for that alone, 4,096 a quarter of it. Longer lists cost search
# time instead, which the recall tuning (nprobe) and the exact refine keep in check.
CPU_NLIST_MAX = 4096
TRAIN_PER_LIST = 64        # k-means training points per IVF list (faiss warns below 39)


def parse_memory(text: str) -> int:
    """'8G', '512M', '1.5GB', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", text)
    if not match:
        raise ValueError(f"cannot read '{text}' as a memory size (e.g. 512M, 8G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def gpu_available() -> bool:
    """faiss-gpu installed and a CUDA device present."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def choose_index_type(n: int, dim: int, max_memory: int) -> str:
    """Pick the index type from the collection size and the memory budget.

    HNSW is never picked automatically (`--index-type hnsw` still builds one): on clustered
    1024-d vectors IVF-Flat was faster *and* exact where HNSW (M=16) was not -- 100k vectors
    0.35 ms / recall 1.000 vs 0.87 ms / 0.983; 1M vectors 1.2 ms / 1.000 vs 15 ms / 0.877 even at
    efSearch 4096 (benchmarks/index.py, docs/performance.md)."""
    full = n * dim * 4
    if n <= FLAT_MAX and full <= max_memory:
        return "flat"
    if full * 1.1 <= max_memory:
        return "ivf_flat"
    return "ivf_pq"


def default_params(kind: str, n: int, dim: int) -> dict[str, Any]:
    """Build-time parameters for `kind` at collection size `n`."""
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return {"M": HNSW_M, "efConstruction": 40, "efSearch": 32}
    nlist = int(min(max(1, 4 * math.sqrt(n)), max(1, n // 39)))
    if kind != "hnsw" and not gpu_available():
        nlist = min(nlist, CPU_NLIST_MAX)
    params: dict[str, Any] = {"nlist": nlist, "nprobe": min(8, nlist)}
    if kind == "ivf_pq":
        m = _pq_subquantizers(dim)
        params.update({"m": m, "nbits": 8 if n >= 256 * 39 else 4, "refine": REFINE_FACTOR})
    return params


def _pq_subquantizers(dim: int) -> int:
    """Largest divisor of dim giving about 4 dimensions per sub-quantizer (at most 64 bytes/vector)."""
    target = min(64, max(1, dim // 4))
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1


ADD_ROWS = 65536             # rows converted to float32 and added per step: bounded memory at any size


def build(embeddings, kind: str, params: dict[str, Any], seed: int = 0):
    """Build a CPU FAISS index over `embeddings` (an array or index.shards.Shards; row i gets id i).

    Trained on a sample, then filled ADD_ROWS at a time, so a 10M-row shard set is never in
    memory as float32 (about 20 GB at d=512) -- only the index's own codes are.
    """
    import faiss

    n, dim = embeddings.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["efConstruction"]
    elif kind in ("ivf_flat", "ivf_pq"):
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"],
                                     faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        _train(index, embeddings, seed)
    else:
        raise ValueError(f"unknown index type {kind!r}")
    for start in range(0, n, ADD_ROWS):
        index.add(_float32(embeddings[start:start + ADD_ROWS]))
    set_search_params(index, kind, params)
    return index


def _float32(block) -> np.ndarray:
    return np.ascontiguousarray(block, dtype=np.float32)


def _train(index, x, seed: int) -> None:
    """Train on TRAIN_PER_LIST points per list, on the GPU when faiss-gpu has one.

    Why so few: k-means time grows with the sample, and the recall tuning that follows raises
    nprobe if the lists come out coarse. At 1M x 1024-d on 2 cores, 64 points per list built
    IVF-Flat in 135 s against 522 s with 256, at the same recall@10 (1.000) and latency.
    """
    import faiss

    rng = np.random.default_rng(seed)
    cap = TRAIN_PER_LIST * index.nlist
    ids = np.arange(len(x)) if len(x) <= cap else np.sort(rng.choice(len(x), cap, replace=False))
    sample = _float32(x[ids])
    if gpu_available():
        clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(x.shape[1]))
        index.clustering_index = clustering_index
    index.train(sample)


def set_search_params(index, kind: str, params: dict[str, Any]) -> None:
    import faiss

    if kind == "hnsw":
        index.hnsw.efSearch = params["efSearch"]
    elif kind in ("ivf_flat", "ivf_pq"):
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]


def search(index, kind: str, params: dict[str, Any], queries: np.ndarray, k: int,
           embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query; ivf_pq re-scores its shortlist exactly against `embeddings`."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if kind != "ivf_pq" or embeddings is None:
        return index.search(q, k)
    _, cand = index.search(q, min(index.ntotal, k * params.get("refine", REFINE_FACTOR)))
    return refine_exact(q, cand, embeddings, k)


def refine_exact(q: np.ndarray, cand: np.ndarray, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products for each query's candidates, keep the best k (ids -1 are padding)."""
    scores_out = np.full((len(q), k), -np.inf, np.float32)
    ids_out = np.full((len(q), k), -1, np.int64)
    for i, ids in enumerate(cand):
        ids = ids[ids >= 0]
        order = np.sort(ids)  # sorted reads are kinder to a memory-mapped file
        exact = np.asarray(embeddings[order], dtype=np.float32) @ q[i]
        top = np.argsort(-exact, kind="stable")[:k]
        scores_out[i, :len(top)] = exact[top]
        ids_out[i, :len(top)] = order[top]
    return scores_out, ids_out


def exact_topk(embeddings, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force ids of the top-k inner products (ground truth for recall), ADD_ROWS rows at a time
    so that it runs over a shard set larger than memory."""
    q = _float32(queries)
    n = embeddings.shape[0]
    k = min(k, n)
    best_ids = np.zeros((len(q), 0), np.int64)
    best = np.zeros((len(q), 0), np.float32)
    for start in range(0, n, ADD_ROWS):
        sims = q @ _float32(embeddings[start:start + ADD_ROWS]).T
        ids = np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)
        sims, ids = np.concatenate([best, sims], axis=1), np.concatenate([best_ids, ids], axis=1)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if sims.shape[1] > k else \
            np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        rows = np.arange(len(q))[:, None]
        best, best_ids = sims[rows, part], ids[rows, part]
    order = np.lexsort((best_ids, -best), axis=1) if len(q) else np.zeros((0, k), np.int64)
    rows = np.arange(len(q))[:, None]
    return best_ids[rows, order]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k present in the found top-k."""
    k = truth.shape[1]
    if k == 0:
        return 1.0
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def sample_queries(embeddings: np.ndarray, count: int = 200, seed: int = 0) -> np.ndarray:
    """Query-like vectors that are not items themselves: half normalised midpoints of two random
    items (between topics), half items moved by noise as large as the items' own spread (near a topic)."""
    rng = np.random.default_rng(seed)
    n, dim = embeddings.shape
    half = count // 2
    a = np.asarray(embeddings[rng.integers(0, n, half)], dtype=np.float32)
    b = np.asarray(embeddings[rng.integers(0, n, half)], dtype=np.float32)
    c = np.asarray(embeddings[rng.integers(0, n, count - half)], dtype=np.float32)
    spread = float(np.asarray(embeddings[rng.integers(0, n, 256)], dtype=np.float32).std(axis=0).mean())
    near = c + rng.standard_normal(c.shape).astype(np.float32) * spread * 0.5
    q = np.concatenate([a + b, near])
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


@dataclass
class Built:
    """A built index with its tuned parameters and measured quality."""

    index: Any
    kind: str
    params: dict[str, Any]
    recall_at_10: float
    recall_queries: int
    build_seconds: float
    tuning: list[dict[str, Any]] = field(default_factory=list)


def build_tuned(embeddings, kind: str, params: dict[str, Any] | None = None,
                target: float = RECALL_TARGET, queries: int = 200, seed: int = 0) -> Built:
    """Build `kind`, then raise its search knobs until recall@10 on sample queries reaches `target`."""
    start = time.perf_counter()
    n, dim = embeddings.shape
    params = dict(params or default_params(kind, n, dim))
    index = build(embeddings, kind, params, seed)
    build_seconds = time.perf_counter() - start
    if kind == "flat" or n == 0:
        return Built(index, kind, params, 1.0, 0, build_seconds)
    recall, count, tuning = tune(index, embeddings, kind, params, target, queries, seed)
    return Built(index, kind, params, recall, count, build_seconds, tuning)


def tune(index, embeddings, kind: str, params: dict[str, Any], target: float = RECALL_TARGET,
         queries: int = 200, seed: int = 0) -> tuple[float, int, list[dict[str, Any]]]:
    """Double a search knob of `index` (in `params`) until recall@10 against exact search reaches
    `target`; returns (recall, queries used, one row per setting tried).

    ivf_pq has two knobs and each step doubles the one that gains more recall: probing more lists
    cannot fix a shortlist cut by PQ error, nor a longer exact refine lists never probed. Doubling
    them in turn (the earlier rule) took nprobe to all 4,096 lists at 10M vectors where the refine
    was what was short -- 516 ms a query instead of a few.
    """
    q = sample_queries(embeddings, queries, seed)
    truth = exact_topk(embeddings, q, 10)
    knob = "efSearch" if kind == "hnsw" else "nprobe"
    tops = {knob: 4096 if kind == "hnsw" else params["nlist"], "refine": MAX_REFINE}
    tuning: list[dict[str, Any]] = []
    while True:
        recall = _recall(index, kind, params, q, truth, embeddings)
        tuning.append({knob: params[knob], **({"refine": params["refine"]} if "refine" in params else {}),
                       "recall_at_10": round(recall, 4)})
        grow = {name: min(top, params[name] * 2) for name, top in tops.items() if name in params and params[name] < top}
        if recall >= target or not grow:
            break
        if len(grow) == 1:
            params.update(grow)
            continue
        gains = {name: _recall(index, kind, {**params, name: value}, q, truth, embeddings)
                 for name, value in grow.items()}
        best = max(gains, key=lambda name: (gains[name], name == "refine"))  # a tie: the refine is cheaper
        params[best] = grow[best]
    set_search_params(index, kind, params)
    return recall, len(q), tuning


def _recall(index, kind: str, params: dict[str, Any], q: np.ndarray, truth: np.ndarray, embeddings) -> float:
    set_search_params(index, kind, params)
    _, found = search(index, kind, params, q, 10, embeddings)
    return recall_at_k(found, truth)


def write(index, path) -> None:
    """faiss.write_index, with its RuntimeError on a failed write (full disk...) turned into an OSError."""
    import errno

    import faiss

    try:
        faiss.write_index(index, str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        code = errno.ENOSPC if "No space" in str(exc) else errno.EIO
        raise OSError(code, f"FAISS could not write the file ({lines[-1][:120] if lines else 'error'})",
                      str(path)) from None


def read(path, kind: str, params: dict[str, Any]):
    import faiss

    # Memory-mapped: the inverted lists (codes and ids, nearly all of an IVF index) stay on disk and
    # only the lists a query probes are paged in, so opening a 10M-vector index costs no RAM.
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    set_search_params(index, kind, params)
    return index
