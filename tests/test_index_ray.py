"""`index build --ray local`: Ray Data embeds, the builder writes the very same index as a local build."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest_index import build, read_index, run_cli, tiny_clip_dir, write_images  # noqa: F401

# hypothesis' pytest plugin imports hypothesis at session end through pytest's assertion rewriter; after
# Ray has run, CPython 3.11.7's AST validator fails that parse ("AST constructor recursion depth mismatch"),
# so it is imported here, before Ray, as the full suite already does (test_hostile_options).
pytest.importorskip("hypothesis")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]'); --ray cannot be tested")


@pytest.fixture(scope="module")
def ray_instance():
    """One small local Ray for the module (two CPUs, no dashboard); `--ray local` joins it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20)
    yield
    ray.shutdown()


def _folder(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 14, seed=4)
    (folder / "not-an-image.png").write_bytes(b"this is text, not a PNG")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def _strip(items: dict) -> dict:
    return {p: {k: v for k, v in r.items() if k != "row"} for p, r in items.items()}


def _search(index_dir, query: str) -> list[tuple[str, float]]:
    result = run_cli("search", query, "--index", index_dir, "--json", "--top", "5")
    assert result.exit_code == 0, result.output
    return [(r["path"], r["clip_score"]) for r in json.loads(result.stdout)["results"]]


def test_ray_build_resumes_matches_the_local_build_and_updates_incrementally(tmp_path, tiny_clip_dir, ray_instance):
    folder = _folder(tmp_path)
    args = ("--batch-size", "4")
    ray_args = (*args, "--ray", "local", "--workers", "2")
    local, local_sum = build(folder, tmp_path / "local", tiny_clip_dir, *args)
    assert local.exit_code == 0, local.output

    # killed after two finished blocks: nothing published, their chunks kept
    killed, _ = build(folder, tmp_path / "ray", tiny_clip_dir, *ray_args, env={"DISCFF_INDEX_FAIL_AFTER_BATCHES": "2"})
    assert killed.exit_code != 0 and not (tmp_path / "ray" / "manifest.json").exists()
    chunks = list((tmp_path / "ray" / "pending").glob("chunk-*.json"))
    done = sum(len(json.loads(c.read_text())["records"]) for c in chunks)  # files in finished blocks
    assert len(chunks) == 2 and done == 8

    remote, ray_sum = build(folder, tmp_path / "ray", tiny_clip_dir, *ray_args)
    assert remote.exit_code == 0, remote.output
    assert ray_sum["resumed"] == done  # the finished blocks were not embedded again
    assert (ray_sum["indexed"], ray_sum["skipped"]) == (local_sum["indexed"], local_sum["skipped"]) == (14, 2)
    assert ray_sum["skipped_files"] == local_sum["skipped_files"]  # same files, same reasons
    assert not (tmp_path / "ray" / "pending").exists()

    m1, items1, emb1 = read_index(tmp_path / "local")
    m2, items2, emb2 = read_index(tmp_path / "ray")
    assert _strip(items1) == _strip(items2)  # paths, sizes, hashes, statuses, errors
    assert [r["row"] for r in items1.values()] == [r["row"] for r in items2.values()]
    assert np.abs(emb1.astype(np.float32) - emb2.astype(np.float32)).max() <= 1e-5
    assert m1["clip"] == m2["clip"] and m1["count"] == m2["count"] == 14
    for query in ("a red circle", "two blue squares"):
        assert _search(tmp_path / "ray", query) == _search(tmp_path / "local", query)

    write_images(folder / "new", 1, seed=77)
    again, summary = build(folder, tmp_path / "ray", tiny_clip_dir, *ray_args)
    assert again.exit_code == 0, again.output
    assert (summary["indexed"], summary["unchanged"], summary["files"]) == (1, 14, 17)


def test_without_ray_the_option_says_what_to_install(tmp_path, tiny_clip_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result, _ = build(_folder(tmp_path), tmp_path / "idx", tiny_clip_dir, "--ray")
    assert result.exit_code != 0 and "pip install -e '.[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "idx").exists()
