"""FAISS layer: exact search is exact, every approximate type reaches recall@10 >= 0.95."""

from __future__ import annotations

import numpy as np
import pytest

from conftest_index import faiss_single_thread
from index import faiss_index as fi


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors_50k() -> np.ndarray:
    faiss_single_thread()
    # stored as float16 like the index does, so exact search on them is the ground truth
    return unit_vectors(50_000, 32, seed=0).astype(np.float16).astype(np.float32)


def test_flat_search_is_brute_force_top_k():
    x = unit_vectors(3_000, 24, seed=1)
    q = unit_vectors(50, 24, seed=2)
    built = fi.build_tuned(x, "flat")
    scores, ids = fi.search(built.index, "flat", built.params, q, 10)
    sims = q @ x.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_pq"])
def test_approximate_index_recall_at_10(vectors_50k, kind):
    built = fi.build_tuned(vectors_50k, kind)
    queries = unit_vectors(300, 32, seed=7)  # unseen random queries, not the tuning sample
    _, found = fi.search(built.index, kind, built.params, queries, 10, vectors_50k)
    recall = fi.recall_at_k(found, fi.exact_topk(vectors_50k, queries, 10))
    assert recall >= 0.95, (kind, recall, built.tuning)
    assert built.recall_at_10 >= 0.95  # what the manifest will record


def test_index_type_follows_size_and_memory_budget():
    gib = 1 << 30
    assert fi.choose_index_type(10_000, 1024, 8 * gib) == "flat"
    assert fi.choose_index_type(500_000, 1024, 8 * gib) == "ivf_flat"  # not HNSW (with or without a GPU): slower, inexact
    assert fi.choose_index_type(5_000_000, 1024, 32 * gib) == "ivf_flat"
    assert fi.choose_index_type(5_000_000, 1024, 8 * gib) == "ivf_pq"
    assert fi.choose_index_type(10_000, 1024, 1 << 20) == "ivf_pq"  # 40 MB of vectors in a 1 MB budget


def test_memory_sizes_parse():
    assert fi.parse_memory("512M") == 512 << 20
    assert fi.parse_memory("8G") == 8 << 30
    assert fi.parse_memory("1.5GiB") == int(1.5 * (1 << 30))
    with pytest.raises(ValueError):
        fi.parse_memory("lots")
