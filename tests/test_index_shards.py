"""Embeddings as float16 shards: rows read back exactly across shard boundaries, an index spread over
several shards searches, updates, checks and repairs like a one-file index, and exact search streams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest_index import build, read_index, run_cli, tiny_clip_dir, write_images  # noqa: F401


def _write(tmp_path, x: np.ndarray, shard_rows: int):
    from index.shards import ShardWriter, shard_count, shard_names

    paths = [tmp_path / name for name in shard_names("embeddings-7", shard_count(len(x), shard_rows))]
    writer = ShardWriter(paths, len(x), x.shape[1], shard_rows)
    for start in range(0, len(x), 13):  # blocks that straddle shard boundaries
        writer.write(x[start:start + 13])
    writer.close()
    return paths


def test_rows_read_back_exactly_across_shard_boundaries(tmp_path):
    from index.shards import Shards

    x = np.random.default_rng(0).standard_normal((100, 6)).astype(np.float16)
    paths = _write(tmp_path, x, shard_rows=30)
    assert [p.name for p in paths] == ["embeddings-7.npy", "embeddings-7-1.npy", "embeddings-7-2.npy",
                                       "embeddings-7-3.npy"]
    emb = Shards(paths)
    ids = np.array([99, 0, 29, 30, 30, 61, 5])  # any order, repeats, both sides of each boundary
    assert emb.shape == (100, 6)
    assert np.array_equal(np.asarray(emb), x) and np.array_equal(emb[ids], x[ids])
    assert np.array_equal(emb[25:75], x[25:75]) and np.array_equal(emb[-1], x[-1])
    assert np.array_equal(np.concatenate([block for _, block in emb.chunks(17)]), x)
    assert np.array_equal(np.load(paths[1]), x[30:60])  # each shard is a plain .npy


def test_a_cut_shard_is_refused_with_the_reason(tmp_path):
    from index.shards import Shards, ShardError

    paths = _write(tmp_path, np.ones((50, 4), np.float16), shard_rows=20)
    with open(paths[1], "r+b") as handle:
        handle.truncate(paths[1].stat().st_size - 10)
    with pytest.raises(ShardError, match="cut short"):
        Shards(paths)


def test_exact_topk_streamed_in_blocks_equals_brute_force(monkeypatch, tmp_path):
    from index import faiss_index
    from index.shards import Shards

    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 16)).astype(np.float16)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    monkeypatch.setattr(faiss_index, "ADD_ROWS", 64)
    streamed = faiss_index.exact_topk(Shards(_write(tmp_path, x, shard_rows=150)), q, 10)
    sims = q @ x.astype(np.float32).T
    assert np.array_equal(streamed, np.argsort(-sims, axis=1, kind="stable")[:, :10])


def _results(index_dir, tiny_clip_dir, query: str = "a red square") -> list:
    result = run_cli("search", query, "--index", index_dir, "--clip", tiny_clip_dir, "--top", "8", "--json")
    assert result.exit_code == 0, result.output
    return [(r["path"], r["clip_score"]) for r in json.loads(result.stdout)["results"]]


@pytest.fixture()
def small_shards(monkeypatch):
    """Shards of 5 rows, so a 16-image test folder spreads over 4 shard files."""
    monkeypatch.setattr("index.shards.SHARD_ROWS", 5)


def test_an_index_over_several_shards_searches_like_a_one_file_index(tmp_path, tiny_clip_dir, small_shards,
                                                                    monkeypatch):
    write_images(tmp_path / "images", 16, seed=3)
    assert build(tmp_path / "images", tmp_path / "sharded", tiny_clip_dir)[0].exit_code == 0
    manifest, _, emb = read_index(tmp_path / "sharded")
    shards = sorted(name for key, name in manifest["files"].items() if key.startswith("embeddings"))
    assert shards == ["embeddings-1-1.npy", "embeddings-1-2.npy", "embeddings-1-3.npy", "embeddings-1.npy"]
    monkeypatch.undo()
    assert build(tmp_path / "images", tmp_path / "single", tiny_clip_dir)[0].exit_code == 0
    _, _, single = read_index(tmp_path / "single")
    assert np.array_equal(emb, single)
    assert _results(tmp_path / "sharded", tiny_clip_dir) == _results(tmp_path / "single", tiny_clip_dir)


def test_a_sharded_index_updates_and_repairs_a_damaged_shard(tmp_path, tiny_clip_dir, small_shards):
    write_images(tmp_path / "images", 16, seed=3)
    assert build(tmp_path / "images", tmp_path / "idx", tiny_clip_dir)[0].exit_code == 0
    _, _, before = read_index(tmp_path / "idx")
    write_images(tmp_path / "images", 1, seed=4, prefix="new")
    _, summary = build(tmp_path / "images", tmp_path / "idx", tiny_clip_dir)
    assert summary["indexed"] == 1 and summary["unchanged"] == 16  # reused rows read from the old shards

    manifest, _, after = read_index(tmp_path / "idx")
    middle = tmp_path / "idx" / manifest["files"]["embeddings.2"]
    data = bytearray(middle.read_bytes())
    data[-8:] = b"\x00" * 8  # same size, other bytes: only the checksum tells
    middle.write_bytes(bytes(data))
    check = run_cli("index", "check", "--index", tmp_path / "idx", "--json")
    assert check.exit_code == 1 and middle.name in check.stdout
    _, summary = build(tmp_path / "images", tmp_path / "idx", tiny_clip_dir)
    assert summary["repaired"] and middle.name in summary["repaired"][0]
    assert run_cli("index", "check", "--index", tmp_path / "idx").exit_code == 0
    _, _, repaired = read_index(tmp_path / "idx")
    assert np.allclose(repaired, after, atol=2e-3) and len(after) == len(before) + 1
