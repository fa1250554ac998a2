"""Fixtures for the index/search tests: a tiny random CLIP saved in open_clip's local-dir format
and small folders of real image files. Import the fixtures you need into a test module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random-weight OpenCLIP saved on disk; loaded through `load_clip` like real weights."""
    from index.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip", seed=0)


@pytest.fixture(scope="session")
def other_clip_dir(tmp_path_factory) -> Path:
    """A second tiny CLIP with different weights (for model-mismatch checks)."""
    from index.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("other_clip") / "clip", seed=1)


def write_images(folder: Path, count: int, seed: int = 0, prefix: str = "img") -> list[Path]:
    """Write `count` distinct small random-colour images (png/jpg alternating) into nested folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(24 + i % 5, 28, 3), dtype=np.uint8)
        path = sub / f"{prefix}{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    """Twenty good images in three sub-folders."""
    folder = tmp_path / "images"
    write_images(folder, 20)
    return folder


def run_cli(*args: str, env: dict | None = None, catch: bool = False):
    """Invoke the real click app in-process; returns click's Result (`catch` keeps a crash as a result)."""
    from click.testing import CliRunner

    from discff_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=catch)


def build(folder: Path, index_dir: Path, clip_dir: Path, *extra: str, env: dict | None = None):
    """`discff index build` with --json; returns (result, summary dict or None)."""
    import json

    result = run_cli("index", "build", folder, "--index", index_dir, "--clip", clip_dir, "--device", "cpu",
                     "--json", *extra, env=env, catch=env is not None)
    summary = json.loads(result.stdout) if result.exit_code == 0 else None
    return result, summary


def built_folder(root: Path, clip_dir: Path, count: int, seed: int) -> Path:
    """`root/images` with `count` images and `root/idx` built from them: a pristine index that
    damage and write-failure tests copy before breaking it."""
    write_images(root / "images", count, seed=seed)
    result, _ = build(root / "images", root / "idx", clip_dir)
    assert result.exit_code == 0, result.output
    return root


def rerank_index(root: Path, clip_dir: Path, sd_dir: Path, count: int, seed: int) -> Path:
    """`root/idx`: `count` images of `root/images` indexed with `clip_dir`, recording `sd_dir` for --rerank."""
    write_images(root / "images", count, seed=seed)
    result, _ = build(root / "images", root / "idx", clip_dir, "--model", sd_dir)
    assert result.exit_code == 0, result.output
    return root / "idx"


def without_timings(doc: dict) -> dict:
    """A search --json document without its `*_s` timings (the only part that differs between equal runs)."""
    stats = {k: v for k, v in doc.get("stats", {}).items() if not k.endswith("_s")}
    return {**doc, **({"stats": stats} if "stats" in doc else {})}


def read_index(index_dir: Path) -> tuple[dict, dict, np.ndarray]:
    """(manifest, {path: item record}, embeddings) straight from disk."""
    from index.store import IndexDir

    store = IndexDir(index_dir)
    manifest = store.read_manifest()
    items = {rec["path"]: rec for rec in store.read_items(manifest).records()}
    return manifest, items, store.read_embeddings(manifest)


def faiss_single_thread():
    """faiss' OpenMP spin-waits badly on a busy 2-core CI box; one thread is faster and deterministic."""
    import faiss

    faiss.omp_set_num_threads(1)
