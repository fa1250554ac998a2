"""One SearchRequest, checked by one `search_request`, whichever front end sends it; one search
document, which the Python API returns and serialises as `discff search --json` prints it."""

from __future__ import annotations

import json

import pytest

from conftest_index import rerank_index, run_cli, tiny_clip_dir, without_timings  # noqa: F401

ENGINE = ["--steps", "1", "--levels", "0.5", "--device", "cpu"]


@pytest.mark.parametrize("values, cli, line, http", [
    ({"query": "  "}, "The query is empty", '"query" is empty', "q is empty"),
    ({"query": "a", "top": 0}, "--top must be an integer >= 1, not 0.", '"top" must be an integer >= 1, not 0.',
     "top must be an integer from 1 to 200, not 0."),
    ({"query": "a", "rerank": "2.5"}, "--rerank must be an integer >= 0", '"rerank" must be an integer >= 0',
     "rerank must be an integer from 0 to 100"),
    ({"query": "a", "score": "clip"}, "--score must be one of", '"score" must be one of', "score must be one of"),
    ({"query": "a", "fusion": "max"}, "--fusion must be one of", '"fusion" must be one of', "fusion must be one of"),
    ({"query": "a", "fusion_weight": "nan"}, "--fusion-weight must be a number from 0 to 1",
     '"fusion_weight" must be a number from 0 to 1', "weight must be a number from 0 to 1"),
])
def test_one_check_names_the_field_as_each_front_end_spells_it(values, cli, line, http):
    from discff_cli.errors import DiscffError
    from discff_cli.search.request import CLI, HTTP, JSON_LINE, Limits, search_request

    for spelling, limits, expected in ((CLI, Limits(), cli), (JSON_LINE, Limits(), line),
                                       (HTTP, Limits(200, 100, 500), http)):
        with pytest.raises(DiscffError) as caught:
            search_request(values, limits, spelling)
        message = str(caught.value)
        assert message.startswith(expected) and message.endswith(".") and "\n" not in message


def test_a_request_takes_what_it_leaves_out_from_the_defaults():
    from discff_cli.search.request import SearchRequest, search_request
    from discff_cli.search.rerank import Fusion

    line = search_request({"query": " a red cube ", "rerank": "0", "fusion_weight": 0.25})
    assert line == SearchRequest("a red cube", None, 0, None, None, 0.25)
    merged = line.over(SearchRequest("ignored", top=7, rerank=20, score="denoise"))
    assert (merged.query, merged.top, merged.rerank, merged.score) == ("a red cube", 7, 0, "denoise")
    assert merged.rows == 7 and SearchRequest("q", rerank=5).rows == 5 and SearchRequest("q").rows == 10
    assert line.fusion_over(Fusion("rrf", 0.5)) == Fusion("rrf", 0.25)


def test_http_and_the_cli_share_the_check(tmp_path):
    from discff_cli.service.app import BadRequest, ServeSettings, parse_query

    settings = ServeSettings(str(tmp_path))
    request = parse_query({"q": "a red cube", "top": "3", "rerank": "0", "weight": "0.3", "token": "x"}, settings)
    assert (request.query, request.top, request.rerank, request.fusion_weight) == ("a red cube", 3, None, 0.3)
    with pytest.raises(BadRequest, match="top must be an integer from 1 to 200"):
        parse_query({"q": "a", "top": "201"}, settings)


def test_the_python_api_returns_and_serialises_the_search_json_document(tmp_path, tiny_clip_dir, tiny_sd_dir):
    from discff_cli.api import open_index, to_json

    index = rerank_index(tmp_path, tiny_clip_dir, tiny_sd_dir, 6, 3)
    result = run_cli("search", "a red circle", "--index", index, "--top", "4", "--rerank", "3", *ENGINE, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    doc = open_index(str(index), steps=1, levels=(0.5,), device="cpu").run("a red circle", top=4, rerank=3)
    assert without_timings(json.loads(to_json(doc))) == without_timings(printed)
