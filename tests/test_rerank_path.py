"""One rerank path: `--prune` is spent wherever it is offered (counted in U-Net passes), the demo's gallery
figures are `discff search`'s own rerank, unreadable shortlists fall back to CLIP, panoramas score."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest_eval import world_eval_dir  # noqa: F401
from conftest_index import rerank_index, run_cli, tiny_clip_dir  # noqa: F401

ENGINE = ["--steps", "2", "--levels", "0.5,1.0", "--device", "cpu"]  # 4 conditions: room to prune
QUERY = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_clip_dir, tiny_sd_dir):
    return rerank_index(tmp_path_factory.mktemp("rerank-path"), tiny_clip_dir, tiny_sd_dir, 12, 7)


def _json(*args) -> dict:
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_search_prune_spends_fewer_unet_passes_and_says_so(index_dir):
    full = _json("search", QUERY, "--index", index_dir, "--rerank", "6", *ENGINE)
    pruned = _json("search", QUERY, "--index", index_dir, "--rerank", "6", *ENGINE, "--prune")
    assert full["stats"]["unet_passes"] == 6 * 4 + 6 * 4  # pairs x conditions + the empty prompt per image
    assert pruned["stats"]["unet_passes"] < full["stats"]["unet_passes"]
    text_passes = pruned["stats"]["unet_passes"] - pruned["stats"]["empty_prompt_passes"]
    assert pruned["stats"]["prune"][pruned["score"]]["passes"] == text_passes < 6 * 4
    assert pruned["engine"]["prune"] is True and "prune" not in full["stats"]


def test_queries_file_prunes_each_query(index_dir, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text(f"{QUERY}\na green triangle\n")
    result = run_cli("search", "--queries", queries, "--index", index_dir, "--rerank", "6", *ENGINE, "--prune",
                     "--json")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 2
    for doc in docs:
        stats = doc["stats"]
        assert stats["prune"] and stats["unet_passes"] - stats["empty_prompt_passes"] < stats["full_grid_passes"] == 24


def test_eval_prune_spends_fewer_passes(world_eval_dir, tiny_sd_dir):
    file = str(world_eval_dir / "single_object.jsonl")
    args = ["eval", file, "--no-clip", "--model", str(tiny_sd_dir), "--score", "denoise", "--max-per-tag", "2",
            *ENGINE]
    full, pruned = _json(*args)["systems"]["denoise"], _json(*args, "--prune")["systems"]["denoise"]
    assert full["prune"] is False and pruned["prune"] is True
    assert pruned["unet_passes"] < full["unet_passes"] and pruned["full_grid_passes"] == full["full_grid_passes"]


def test_score_prune_spends_fewer_passes(tiny_sd_dir, sample_image, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\na blue square\ntwo cats\na green triangle\n")
    args = ["score", sample_image, captions, "--model", tiny_sd_dir, *ENGINE]
    full, pruned = _json(*args), _json(*args, "--prune")
    assert pruned["unet_passes"] < full["unet_passes"] == 4 * 4 + 4
    assert {r["text"] for r in pruned["results"]} == {r["text"] for r in full["results"]}


def test_tune_refuses_prune_in_one_sentence(tmp_path):
    result = run_cli("tune", tmp_path / "pairs.jsonl", "--prune")
    assert result.exit_code != 0 and "--prune" in result.output and len(result.output.strip().splitlines()) == 1


def test_the_gallery_measurement_is_search_s_own_rerank(index_dir):
    """gallery_eval (what `discff demo` prints) must order a query exactly as `discff search` does."""
    from discff_cli.evaluation import gallery as ge
    from discff_cli.api import open_index
    doc = _json("search", QUERY, "--index", index_dir, "--rerank", "6", "--top", "6", *ENGINE, "--prune")
    family = doc["score"]
    searcher = open_index(str(index_dir), steps=2, levels=(0.5, 1.0), device="cpu", prune=True)
    record = ge.measure(searcher, [ge.GalleryQuery(QUERY, "two-object")], lambda p, q: False, 6, (family,))[0]
    assert record.unet_passes == doc["stats"]["unet_passes"]
    order = ge.final_order(record.clip_scores, record.scores[family], doc["fusion"]["method"], doc["fusion"]["weight"])
    hits = searcher.shortlist(QUERY, 6)
    assert [os.path.abspath(hits[i].path) for i in order] == [os.path.abspath(r["path"]) for r in doc["results"]]
    np.testing.assert_allclose(np.sort(record.scores[family])[::-1],
                               sorted((r["rerank_score"] for r in doc["results"]), reverse=True), rtol=1e-6)


def test_a_shortlist_with_no_readable_file_returns_the_clip_order(tmp_path, tiny_clip_dir, tiny_sd_dir):
    index = rerank_index(tmp_path, tiny_clip_dir, tiny_sd_dir, 5, 3)
    clip_order = _json("search", QUERY, "--index", index, "--top", "5")["results"]
    for path in (tmp_path / "images").rglob("*.*"):
        path.write_bytes(b"not an image any more")
    result = run_cli("search", QUERY, "--index", index, "--rerank", "5", *ENGINE, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["path"] for r in doc["results"]] == [r["path"] for r in clip_order]
    assert all(r["rerank_score"] is None for r in doc["results"]) and doc["stats"]["unet_passes"] == 0
    assert "5 shortlisted file(s) can no longer be read" in result.stderr


def test_score_takes_a_10000x10_panorama(tiny_sd_dir, tmp_path):
    image = tmp_path / "panorama.png"
    Image.fromarray(np.tile(np.arange(10000, dtype=np.uint8)[None, :, None], (10, 1, 3))).save(image)
    captions = tmp_path / "captions.txt"
    captions.write_text("a long strip\na dot\n")
    doc = _json("score", image, captions, "--model", tiny_sd_dir, "--steps", "1", "--levels", "0.5",
                "--device", "cpu")
    assert len(doc["results"]) == 2 and all(np.isfinite(r["score"]) for r in doc["results"])


def test_resize_center_crop_never_builds_the_resized_panorama():
    from discff_cli.engine.preprocess import resize_center_crop

    strip = Image.new("RGB", (10000, 10), (0, 0, 0))
    strip.paste((255, 255, 255), (4995, 0, 5005, 10))  # a white square in the middle
    out = resize_center_crop(strip, 64)
    assert out.size == (64, 64) and np.asarray(out).mean() > 200  # the center, scaled up, is the white square
