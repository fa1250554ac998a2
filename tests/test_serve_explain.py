"""The service's /explain and the choices the page offers: a result's map sums to the rerank score
that result shows, by index id only, with /search's errors and auth; per-request score and fusion;
what the index holds about each result, for the page's hover."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest_index import tiny_clip_dir  # noqa: F401
from conftest_serve import client, served_index, service, start_service  # noqa: F401
from discff_cli.engine.config import DEFAULT_SCORE

QUERY = "a red circle left of a blue square"


def one_sentence(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"] and response.json()["error"].endswith(".")
    return response.json()["error"]


@pytest.mark.parametrize("score", ["denoise", "attention"])
def test_a_results_map_sums_to_the_rerank_score_it_shows(client, score):
    rows = client.get("/search", params={"q": QUERY, "rerank": 3, "score": score}).json()["results"]
    row = next(r for r in rows[:3] if "link-to-outside" not in r["path"])  # that one is never served
    doc = client.get("/explain", params={"id": row["id"], "q": QUERY, "score": score}).json()
    assert doc["score"] == score and doc["id"] == row["id"]
    assert doc["score_value"] == pytest.approx(row["rerank_score"], rel=1e-4, abs=1e-7)
    png = Image.open(io.BytesIO(base64.b64decode(doc["png"].split(",", 1)[1])))
    assert png.format == "PNG" and png.width >= 4 * 224
    assert [w["word"] for w in doc["words"]] == QUERY.split()


@pytest.mark.parametrize("params, status", [
    ({"q": QUERY}, 400), ({"id": "x", "q": QUERY}, 400), ({"id": "-1", "q": QUERY}, 400),
    ({"id": "16", "q": QUERY}, 400), ({"id": "0"}, 400), ({"id": "0", "q": "x" * 501}, 400),
    ({"id": "0", "q": QUERY, "score": "clip-only"}, 400),
])
def test_bad_explain_requests_get_one_sentence(client, params, status):
    one_sentence(client.get("/explain", params=params), status)


def test_explain_serves_by_id_only_never_outside_the_folder(client, service):
    link = service[0].models.index.rel_by_row.index("link-to-outside.jpg")
    assert "outside" in one_sentence(client.get("/explain", params={"id": link, "q": QUERY}), 404)


def test_explain_needs_the_token_like_search(served_index):
    worker, app = start_service(served_index, token="s3cret")
    try:
        client = TestClient(app)
        item = worker.models.index.rel_by_row.index("part1/img001.png")
        one_sentence(client.get("/explain", params={"id": item, "q": QUERY}), 401)
        ok = client.get("/explain", params={"id": item, "q": QUERY}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["maps"]
    finally:
        worker.stop()


def test_a_request_picks_its_fusion_and_the_answer_says_which(client):
    alone = client.get("/search", params={"q": QUERY, "top": 5, "rerank": 5, "fusion": "none"}).json()
    assert alone["fusion"] == {"method": "none", "weight": 0.5} and alone["score"] == DEFAULT_SCORE
    scores = [r["rerank_score"] for r in alone["results"]]
    assert scores == sorted(scores, reverse=True) and [r["fused_score"] for r in alone["results"]] == scores
    fused = client.get("/search", params={"q": QUERY, "top": 5, "rerank": 5, "weight": "0"}).json()
    assert fused["fusion"] == {"method": "zsum", "weight": 0.0}
    assert [r["clip_rank"] for r in fused["results"]] == [1, 2, 3, 4, 5]  # weight 0: CLIP's order


@pytest.mark.parametrize("params", [{"fusion": "max"}, {"weight": "2"}, {"weight": "nan"}, {"weight": "x"}])
def test_bad_fusion_gets_400(client, params):
    one_sentence(client.get("/search", params={"q": QUERY, "rerank": 2, **params}), 400)


def test_info_names_the_default_score_and_fusion_the_page_must_select(client):
    service = client.get("/info").json()["service"]
    assert service["score"] == DEFAULT_SCORE and service["score"] in service["scores"]
    assert service["fusion"] == "zsum" and service["fusions"] == ["zsum", "rrf", "none"]
    assert service["fusion_weight"] == 0.5 and DEFAULT_SCORE in service["explain_scores"]


def test_rows_carry_what_the_index_holds_and_a_sidecar_caption(client, service):
    searcher = service[0].models
    rows = client.get("/search", params={"q": "green", "top": 16}).json()["results"]
    target = next(r for r in rows if "link" not in r["path"])
    sidecar = Path(target["path"]).with_suffix(".txt")
    sidecar.write_text("a green square above a red circle\n")
    try:
        again = client.get("/search", params={"q": "green", "top": 16}).json()["results"]
    finally:
        sidecar.unlink()
    meta = next(r for r in again if r["id"] == target["id"])["meta"]
    width, height = Image.open(target["path"]).size
    assert (meta["width"], meta["height"], meta["bytes"]) == (width, height, Path(target["path"]).stat().st_size)
    assert meta["caption"] == "a green square above a red circle"
    assert all("caption" not in r["meta"] for r in again if r["id"] != target["id"])
    assert searcher.index.rel_by_row[target["id"]] in target["path"]
