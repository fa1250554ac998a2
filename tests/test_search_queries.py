"""`discff search --queries FILE`: many queries, models loaded once, the same documents as one-by-one search."""

from __future__ import annotations

import json

import pytest

from conftest_index import rerank_index, run_cli, tiny_clip_dir, without_timings  # noqa: F401

ENGINE = ["--steps", "1", "--levels", "0.5", "--seed", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_clip_dir, tiny_sd_dir):
    return rerank_index(tmp_path_factory.mktemp("queries"), tiny_clip_dir, tiny_sd_dir, 16, 9)


def _single(index_dir, query: str, *extra: str) -> dict:
    result = run_cli("search", query, "--index", index_dir, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_jsonl_gives_each_query_the_document_single_search_gives(built_index, tmp_path, monkeypatch):
    import discff_cli.engine.scorer as scorer_module
    import discff_cli.search.pipeline as pipeline

    loads = {"clip": 0, "scorer": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            loads[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(pipeline, "load_clip_cli", counted("clip", pipeline.load_clip_cli))
    monkeypatch.setattr(scorer_module, "load_scorer", counted("scorer", scorer_module.load_scorer))
    file = tmp_path / "q.jsonl"
    lines = [{"query": "a red circle"}, {"query": "a blue square", "top": 3},
             {"query": "a green triangle", "rerank": 4, "score": "discffusion"}, {"query": "a red circle", "top": 2}]
    file.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = run_cli("search", "--queries", file, "--index", built_index, "--json", "--top", "5", *ENGINE)
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 4 and loads == {"clip": 1, "scorer": 1}  # one CLIP, one diffusion model for all queries

    expected = [_single(built_index, "a red circle", "--top", "5"), _single(built_index, "a blue square", "--top", "3"),
                _single(built_index, "a green triangle", "--top", "5", "--rerank", "4", "--score", "discffusion",
                        *ENGINE),
                _single(built_index, "a red circle", "--top", "2")]
    assert [without_timings(d) for d in docs] == [without_timings(d) for d in expected]
    assert [len(d["results"]) for d in docs] == [5, 3, 5, 2] and docs[2]["score"] == "discffusion"
    assert docs[2]["stats"]["unet_passes"] > 0 and "stats" not in docs[0]


def test_plain_lines_print_one_table_per_query(built_index, tmp_path):
    file = tmp_path / "q.txt"
    file.write_text("a red circle\n\n  a yellow square  \n")
    result = run_cli("search", "--queries", file, "--index", built_index, "--top", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("CLIP score") == 2
    assert '"a red circle"' in result.stdout and '"a yellow square"' in result.stdout


@pytest.mark.parametrize("content, why", [
    ('{"query": "ok"}\n{"query": "x", "top": 0}\n', "line 2: \"top\" must be an integer >= 1, not 0."),
    ('{"query": "ok"}\n{"query": "x", "rerank": 2.5}\n', "line 2: \"rerank\" must be an integer >= 0"),
    ('{"query": "ok"}\n{"query": "x", "fusion_weight": 2}\n', "line 2: \"fusion_weight\" must be a number from 0 to 1"),
    ('{"query": "ok"}\n\n{"query": "x", "score": "clip"}\n', "line 3: \"score\" must be one of"),
    ('{"query": "ok"}\n{"query": "x"\n', "line 2: not valid JSON"),
    ('{"query": "ok"}\n["a"]\n', "line 2: expected a JSON object"),
    ('{"text": "ok"}\n', "line 1: unknown key 'text'"),
    ('{"query": "  "}\n', "line 1: \"query\" is empty; give the text to search for"),
    ("\n \n", "line 1: the file holds no query"),
])
def test_bad_lines_name_the_file_and_line(built_index, tmp_path, content, why):
    file = tmp_path / "q.jsonl"
    file.write_text(content)
    result = run_cli("search", "--queries", file, "--index", built_index, "--json")
    assert result.exit_code != 0 and result.stdout == ""
    message = result.output.strip()
    assert message == f"Error: {file} {why}" or message.startswith(f"Error: {file} {why}"), message
    assert len(message.splitlines()) == 1


def test_query_and_queries_are_exclusive(built_index, tmp_path):
    file = tmp_path / "q.txt"
    file.write_text("cats\n")
    both = run_cli("search", "dogs", "--queries", file, "--index", built_index)
    neither = run_cli("search", "--index", built_index)
    missing = run_cli("search", "--queries", tmp_path / "none.txt", "--index", built_index)
    for result, text in ((both, "not both"), (neither, "--queries FILE"), (missing, "does not exist")):
        assert result.exit_code != 0 and text in result.output and len(result.output.strip().splitlines()) == 1
