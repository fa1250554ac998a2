"""`discff search`: exact shortlist, clear errors, and --rerank ordered by the engine's own scores."""

from __future__ import annotations

from discff_cli.engine.config import DEFAULT_SCORE

import json

import numpy as np
import pytest

from conftest_index import read_index, rerank_index, run_cli, tiny_clip_dir, other_clip_dir  # noqa: F401


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_clip_dir, tiny_sd_dir):
    return rerank_index(tmp_path_factory.mktemp("search"), tiny_clip_dir, tiny_sd_dir, 24, 5)


def search_json(index_dir, query, *extra):
    result = run_cli("search", query, "--index", index_dir, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_search_returns_the_brute_force_top_k(built_index, tiny_clip_dir):
    from index.clip_model import load_clip

    doc = search_json(built_index, "a red circle left of a blue square", "--top", "7")
    manifest, items, emb = read_index(built_index)
    text = load_clip(tiny_clip_dir, "cpu").embed_texts(["a red circle left of a blue square"])[0]
    sims = emb.astype(np.float32) @ text
    by_row = {r["row"]: p for p, r in items.items()}
    order = np.argsort(-sims, kind="stable")[:7]
    assert [r["path"].split("images/", 1)[1] for r in doc["results"]] == [by_row[i] for i in order]
    np.testing.assert_allclose([r["clip_score"] for r in doc["results"]], sims[order], atol=1e-5)
    assert [r["rank"] for r in doc["results"]] == list(range(1, 8))
    assert all(r["rerank_score"] is None for r in doc["results"]) and doc["query"].startswith("a red")


def test_default_top_is_ten_and_table_has_the_columns(built_index):
    assert len(search_json(built_index, "anything")["results"]) == 10
    table = run_cli("search", "anything", "--index", built_index)
    assert table.exit_code == 0
    for column in ("rank", "CLIP score", "path"):
        assert column in table.output
    assert "score score" not in table.output and "rerank" not in table.output  # no empty rerank column


@pytest.mark.parametrize("case", ["empty query", "missing index", "other clip"])
def test_user_errors_are_one_sentence(built_index, other_clip_dir, tmp_path, case):
    args = {"empty query": ["  ", "--index", built_index],
            "missing index": ["cats", "--index", tmp_path / "none"],
            "other clip": ["cats", "--index", built_index, "--clip", other_clip_dir]}[case]
    result = run_cli("search", *args)
    assert result.exit_code != 0
    message = result.output.strip()
    assert message.startswith("Error: ") and len(message.splitlines()) == 1 and "Traceback" not in message


def test_rerank_reorders_the_shortlist_by_engine_scores(built_index, tiny_sd_dir):
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import load_scorer

    query = "a green triangle above a yellow circle"
    shortlist = search_json(built_index, query, "--top", "5")["results"]
    engine = ["--steps", "2", "--levels", "0.5", "--seed", "3", "--device", "cpu", "--score", "discffusion"]
    doc = search_json(built_index, query, "--rerank", "5", "--fusion", "none", *engine)  # the index's model
    results = doc["results"]
    assert {r["path"] for r in results} == {r["path"] for r in shortlist} and len(results) == 5
    assert doc["score"] == "discffusion" and doc["fusion"]["method"] == "none" and doc["engine"]["seed"] == 3
    assert doc["model"] == str(tiny_sd_dir) and doc["deltas"] is None and doc["clip"]

    clip_by_path = {r["path"]: r["clip_score"] for r in shortlist}
    paths = [r["path"] for r in shortlist]
    scorer = load_scorer(str(tiny_sd_dir), EngineConfig(steps=2, levels=(0.5,), seed=3, device="cpu",
                                                        score="discffusion"))
    direct = scorer.rank(paths, [query] * len(paths)).values
    assert np.ptp(direct) > 0  # distinct scores, so the order below is the engine's, not a tie-break
    expected = [paths[i] for i in np.argsort(-direct, kind="stable")]
    assert [r["path"] for r in results] == expected
    np.testing.assert_allclose([r["rerank_score"] for r in results], np.sort(direct)[::-1], rtol=1e-4, atol=1e-5)
    assert all(r["clip_score"] == clip_by_path[r["path"]] for r in results)
    assert sorted(r["clip_rank"] for r in results) == [1, 2, 3, 4, 5]


def test_default_search_fuses_the_rerank_score_with_clip(built_index):
    from discff_cli.search.fusion import final_order

    engine = ["--steps", "2", "--levels", "0.5", "--device", "cpu"]
    doc = search_json(built_index, "a red square", "--rerank", "6", *engine)
    assert doc["score"] == DEFAULT_SCORE and doc["fusion"] == {"method": "zsum", "weight": 0.5}
    by_clip = sorted(doc["results"], key=lambda r: r["clip_rank"])
    order = final_order([r["clip_score"] for r in by_clip], [r["rerank_score"] for r in by_clip], "zsum", 0.5)
    assert [r["path"] for r in doc["results"]] == [by_clip[i]["path"] for i in order]


def test_rerank_deeper_than_the_index_and_rerank_zero(built_index):
    engine = ["--steps", "1", "--levels", "0.5", "--device", "cpu"]
    table = run_cli("search", "a red square", "--index", built_index, "--rerank", "100", *engine)
    assert table.exit_code == 0, table.output
    count = len(search_json(built_index, "x", "--top", "100")["results"])
    assert f"top {count} reranked" in table.output and "top 100" not in table.output
    plain = search_json(built_index, "a red square", "--rerank", "0")
    assert all(r["rerank_score"] is None for r in plain["results"]) and "score" not in plain


def test_model_override_reaches_the_engine(built_index, tmp_path):
    result = run_cli("search", "cats", "--index", built_index, "--rerank", "2", "--model", tmp_path / "no-model")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no-model" in result.output
