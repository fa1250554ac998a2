"""`score`, `search --rerank`, `eval` and `tune` end to end on tiny SDXL and SD3 pipelines."""

from __future__ import annotations

import json

import pytest

from conftest_index import rerank_index, run_cli, tiny_clip_dir  # noqa: F401
from conftest_tune import colour_pairs, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--steps", "2", "--levels", "0.5", "--device", "cpu"]


@pytest.fixture(params=["sdxl", "sd3"])
def model_dir(request):
    return request.getfixturevalue(f"tiny_{request.param}_dir")


def _json(*args):
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_score_search_eval_and_tune_run_on_the_family(model_dir, tiny_clip_dir, colour_pairs, tmp_path):
    folder = colour_pairs.parent
    captions = tmp_path / "captions.txt"
    captions.write_text("a red picture\na blue picture\n")
    image = folder / "red_0.png"
    scored = _json("score", image, captions, "--model", model_dir, "--json", *FAST)
    assert [r["rank"] for r in scored["results"]] == [1, 2]

    index = rerank_index(tmp_path / "search", tiny_clip_dir, model_dir, 6, 3)
    found = _json("search", "a red picture", "--index", index, "--rerank", "3", "--top", "3", "--json", *FAST)
    assert all(r["rerank_score"] is not None for r in found["results"])

    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"image": str(image), "texts": ["a blue picture", "a red picture"], "answer": 1}) + "\n")
    evaluated = _json("eval", items, "--clip", tiny_clip_dir, "--model", model_dir, "--json", *FAST)
    assert set(evaluated["systems"]) >= {"clip", "denoise"}

    out = tmp_path / "tuned.safetensors"
    tuned = _json("tune", colour_pairs, "--model", model_dir, "--out", out, "--epochs", "1", "--batch-size", "4",
                  "--timestep-weights", "--json", *FAST)
    weights = tuned["timestep_weights"]["weights"]
    assert len(weights) == 2 and abs(sum(weights) / 2 - 1) < 1e-4
    with_deltas = _json("score", image, captions, "--model", model_dir, "--deltas", out, "--json", *FAST)
    assert with_deltas["deltas"] and len(with_deltas["results"]) == 2
