"""`search --queries FILE --ray local`: reranking spread over Ray actors prints the documents a local run prints."""

from __future__ import annotations

import json

import pytest

from conftest_index import rerank_index, run_cli, tiny_clip_dir, without_timings  # noqa: F401

# imported before Ray, as in test_index_ray.py (hypothesis' plugin parses files at session end, which
# fails on CPython 3.11.7 once Ray has run)
pytest.importorskip("hypothesis")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]'); --ray cannot be tested")

ENGINE = ["--steps", "1", "--levels", "0.5", "--seed", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_clip_dir, tiny_sd_dir):
    return rerank_index(tmp_path_factory.mktemp("ray-queries"), tiny_clip_dir, tiny_sd_dir, 12, 5)


def test_ray_without_queries_is_refused_in_one_sentence(built_index):
    result = run_cli("search", "a red circle", "--index", built_index, "--ray", "local")
    assert result.exit_code != 0 and "use it with --queries FILE" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not ray.is_initialized()


def test_a_model_that_fails_to_load_on_the_actors_is_one_sentence_and_ray_stops(built_index, tmp_path):
    file = tmp_path / "q.txt"
    file.write_text("a red circle\na blue square\n")
    result = run_cli("search", "--queries", file, "--index", built_index, "--rerank", "2", "--model",
                     tmp_path / "no-such-model", "--ray", "local", "--workers", "1", "--json", *ENGINE)
    assert result.exit_code != 0 and result.stdout == "", result.output
    assert len(result.output.strip().splitlines()) == 1 and "no-such-model" in result.output, result.output
    assert not ray.is_initialized()  # the command started Ray, so it stopped it, error or not


def _scoreless(doc: dict) -> dict:
    """The document without timings, rerank and fused scores and empty-prompt pass counts (compared on their own)."""
    doc = without_timings(doc)
    stats = dict(doc.get("stats", {}))
    if stats:
        stats["own_passes"] = stats.pop("unet_passes") - stats.pop("empty_prompt_passes")
    rows = [{k: v for k, v in row.items() if k not in ("rerank_score", "fused_score")} for row in doc["results"]]
    return {**doc, **({"stats": stats} if stats else {}), "results": rows}


def test_ray_documents_equal_the_local_ones(built_index, tmp_path):
    import torch

    file = tmp_path / "q.jsonl"
    lines = [{"query": "a red circle", "rerank": 4}, {"query": "a blue square", "top": 3},
             {"query": "a green triangle", "rerank": 3, "score": "discffusion"},
             {"query": "a yellow circle", "rerank": 4, "score": "attention"}]
    file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    args = ("search", "--queries", file, "--index", built_index, "--json", "--top", "5", *ENGINE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two actors on two CPUs: float sums depend on the thread count
    try:
        local = run_cli(*args)
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 0, local.output
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20)
    try:
        remote = run_cli(*args, "--ray", "local", "--workers", "2")
    finally:
        ray.shutdown()
    assert remote.exit_code == 0, remote.output
    docs = [json.loads(line) for line in remote.stdout.splitlines()]
    expected = [json.loads(line) for line in local.stdout.splitlines()]
    assert [d["query"] for d in docs] == [line["query"] for line in lines]  # the file's order
    # Same order, rows, provenance and U-Net passes of each query's own; the empty-prompt errors are
    # cached per process, so an actor recomputes those another query already paid for locally.
    assert [_scoreless(d) for d in docs] == [_scoreless(d) for d in expected]
    exact = 0
    for got, want in zip(docs, expected):
        scores = [r["rerank_score"] for r in got["results"]]
        local_scores = [r["rerank_score"] for r in want["results"]]
        if got.get("stats", {}).get("empty_prompt_passes") == want.get("stats", {}).get("empty_prompt_passes"):
            assert scores == local_scores  # the same work gives the same bits
            exact += "stats" in got
        else:  # e(x, ∅) computed in another batch than the local run's: float32 rounding only
            assert got["stats"]["empty_prompt_passes"] > want["stats"]["empty_prompt_passes"]
            assert [v is None for v in scores] == [v is None for v in local_scores]
            assert [v for v in scores if v is not None] == pytest.approx([v for v in local_scores if v is not None],
                                                                          rel=1e-5)
    assert exact >= 2 and [d["stats"]["unet_passes"] > 0 for d in docs if "stats" in d] == [True, True, True]
