"""`discff serve`'s HTTP API against a tiny real index: same answers as the CLI, files by id only,
one-sentence JSON errors, token auth, a bounded queue and a time limit, and no harm from a failed rerank."""

from __future__ import annotations

from discff_cli.engine.config import DEFAULT_SCORE

import json
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest_index import run_cli, tiny_clip_dir  # noqa: F401
from conftest_serve import ENGINE_FLAGS, client, served_index, service, start_service  # noqa: F401

QUERY = "a red circle left of a blue square"


def assert_one_sentence(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "Traceback" not in response.text
    message = body["error"]
    assert message.endswith(".") and "\n" not in message
    return message


def cli_json(index_dir: Path, *args: str) -> dict:
    result = run_cli("search", QUERY, "--index", index_dir, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_same_rows(served: list[dict], printed: list[dict]) -> None:
    """Same rows: paths, ranks, ids, CLIP ranks and (to float32 precision) scores; the service adds
    only each row's `meta` (what the index holds about the file, for the page's hover)."""
    assert [{k: r[k] for k in ("rank", "path")} for r in served] == [{k: r[k] for k in ("rank", "path")} for r in printed]
    for s, p in zip(served, printed):
        assert set(s) - {"meta"} == set(p) and s["id"] == p["id"] and s["clip_rank"] == p["clip_rank"]
        assert s["clip_score"] == pytest.approx(p["clip_score"], abs=2e-6)
        assert (s["rerank_score"] is None) == (p["rerank_score"] is None)
        if p["rerank_score"] is not None:
            assert s["rerank_score"] == pytest.approx(p["rerank_score"], rel=1e-4, abs=1e-5)


def test_shortlist_equals_discff_search_json(client, served_index):
    doc = client.get("/search", params={"q": QUERY, "top": 6}).json()
    assert_same_rows(doc["results"], cli_json(served_index, "--top", "6")["results"])
    assert [r["clip_rank"] for r in doc["results"]] == list(range(1, 7))
    assert doc["unet_passes"] == 0 and doc["timings_ms"]["total"] >= doc["timings_ms"]["shortlist"] > 0


def test_reranked_search_equals_discff_search_json(client, served_index):
    doc = client.get("/search", params={"q": QUERY, "top": 5, "rerank": 3}).json()
    printed = cli_json(served_index, "--top", "5", "--rerank", "3", *ENGINE_FLAGS)
    assert_same_rows(doc["results"], printed["results"])
    assert all(r["rerank_score"] is not None for r in doc["results"][:3])
    assert sorted(r["clip_rank"] for r in doc["results"][:3]) == [1, 2, 3]  # the reranked head is CLIP's top 3
    # 3 candidates x 1 step x 1 level, plus the empty prompt once per candidate image (denoise)
    assert doc["unet_passes"] == 6 and doc["model"] == "demo" and doc["score"] == DEFAULT_SCORE
    assert doc["timings_ms"]["rerank"] > 0


def assert_same_values(served, printed, where: str = "") -> None:
    """`served` has every key `printed` has, with the same value (floats to float32 precision: the
    service shortlists on one thread, the CLI on all of them)."""
    if isinstance(printed, dict):
        assert isinstance(served, dict), where
        for key, value in printed.items():
            assert key in served, f"{where}.{key} missing from the service's answer"
            assert_same_values(served[key], value, f"{where}.{key}")
    elif isinstance(printed, list):
        assert isinstance(served, list) and len(served) == len(printed), where
        for i, (s, p) in enumerate(zip(served, printed)):
            assert_same_values(s, p, f"{where}[{i}]")
    elif isinstance(printed, float):
        assert served == pytest.approx(printed, rel=1e-4, abs=2e-6), where
    else:
        assert served == printed, where


@pytest.mark.parametrize("params, flags", [
    ({"top": 4}, ("--top", "4")),
    ({"top": 4, "rerank": 3}, ("--top", "4", "--rerank", "3", *ENGINE_FLAGS)),
])
def test_search_json_is_discff_search_json_key_for_key(served_index, params, flags):
    """The service's /search answer holds `discff search --json`'s document, every key with its value
    (the stats' `*_s` timings aside); what it adds (top, rerank, unet_passes, timings_ms, meta) is extra.
    A fresh service, so its caches are as cold as a fresh `discff search` (U-Net passes count what ran)."""
    from conftest_index import without_timings

    worker, app = start_service(served_index)
    try:
        served = TestClient(app).get("/search", params={"q": QUERY, **params}).json()
    finally:
        worker.stop()
    printed = cli_json(served_index, *flags)
    assert_same_values(without_timings(served), without_timings(printed))
    assert set(served) - set(printed) == {"top", "rerank", "unet_passes", "timings_ms"}
    assert all(set(row) - set(p) == {"meta"} for row, p in zip(served["results"], printed["results"]))
    if "stats" in printed:
        assert set(served["stats"]) == set(printed["stats"])


def test_files_are_served_by_result_id(client):
    from PIL import Image
    import io

    rows = client.get("/search", params={"q": "green", "top": 3}).json()["results"]
    row = next(r for r in rows if "link-to-outside" not in r["path"])
    image = client.get(f"/images/{row['id']}")
    assert image.status_code == 200 and image.content == Path(row["path"]).read_bytes()
    thumb = client.get(f"/thumbs/{row['id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == Image.open(row["path"]).size  # small ones are not enlarged


def test_thumbnails_are_cached_under_the_index(client, service, served_index):
    item = service[0].models.index.rel_by_row.index("part1/img001.png")
    first = client.get(f"/thumbs/{item}")
    cached = list((served_index / "thumbs").rglob("*.jpg"))
    assert first.status_code == 200 and first.content in {p.read_bytes() for p in cached}
    assert client.get(f"/thumbs/{item}").content == first.content


@pytest.mark.parametrize("path", [
    "/images/..%2F..%2Fetc%2Fpasswd", "/images/%2Fetc%2Fpasswd", "/images/%2E%2E", "/thumbs/..%2Fmanifest.json",
    "/images/-1", "/images/16", "/thumbs/99999999999", "/images/1.5", "/images/0x1", "/images/%00",
    "/static/..%2F..%2Fpipeline.py", "/static/%2Fetc%2Fpasswd", "/etc/passwd",
])
def test_traversal_attempts_get_4xx_and_no_file(client, path):
    response = client.get(path)
    assert 400 <= response.status_code < 500 and response.json()["error"].endswith(".")
    assert "root:" not in response.text and "import" not in response.text


@pytest.mark.parametrize("raw", ["/images/../../../../etc/passwd", "/images/../manifest.json",
                                 "/static/../../../../etc/passwd", "/thumbs/0/../../manifest.json"])
def test_raw_dot_dot_paths_on_a_live_server_get_4xx(service, raw):
    """What a hand-written request sends, unnormalised by any client library."""
    import socket

    from conftest_serve import live_server

    with live_server(service[1].app) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b"".join(iter(lambda: conn.recv(65536), b"")).decode("latin-1")
    status = int(answer.split(" ", 2)[1])
    assert 400 <= status < 500 and '{"error":' in answer and "root:" not in answer and '"clip"' not in answer


def test_an_indexed_link_leading_outside_the_folder_is_not_served(client, service):
    searcher = service[0].models
    link_id = searcher.index.rel_by_row.index("link-to-outside.jpg")
    for route in ("images", "thumbs"):
        message = assert_one_sentence(client.get(f"/{route}/{link_id}"), 404)
        assert "outside" in message


@pytest.mark.parametrize("params", [
    {}, {"q": "   "}, {"q": "x" * 501}, {"q": "a", "top": "0"}, {"q": "a", "top": "abc"}, {"q": "a", "top": "201"},
    {"q": "a", "rerank": "-1"}, {"q": "a", "rerank": "101"}, {"q": "a", "rerank": "2.5"},
    {"q": "a", "score": "clip-only"},
])
def test_bad_parameters_get_400_with_one_sentence(client, params):
    assert_one_sentence(client.get("/search", params=params), 400)


def test_score_is_forwarded_to_the_pipeline(client):
    response = client.get("/search", params={"q": QUERY, "rerank": 2, "score": "attention"})
    assert response.status_code == 200 and response.json()["score"] == "attention"
    default = client.get("/search", params={"q": QUERY, "rerank": 2}).json()
    assert default["score"] == DEFAULT_SCORE
    assert [r["rerank_score"] for r in default["results"][:2]] != [r["rerank_score"] for r in
                                                                 response.json()["results"][:2]]


def test_other_methods_and_pages_are_json_errors(client):
    assert_one_sentence(client.post("/search", params={"q": "a"}), 405)
    assert_one_sentence(client.get("/no-such-page"), 404)


def test_info_and_healthz(client):
    info = client.get("/info").json()
    assert info["count"] == 16 and info["service"]["engine"]["steps"] == 1 and info["service"]["model"] == "demo"
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_a_token_protected_server_refuses_requests_without_it(served_index):
    worker, app = start_service(served_index, token="s3cret")
    try:
        client = TestClient(app)
        for path in ("/search?q=red", "/info", "/", "/images/0", "/thumbs/0", "/static/app.js"):
            assert_one_sentence(client.get(path), 401)
            assert_one_sentence(client.get(path, headers={"Authorization": "Bearer wrong"}), 401)
        assert client.get("/healthz").status_code == 200
        ok = client.get("/search", params={"q": "red"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["results"]
        browser = TestClient(app)  # a browser opens the printed link once, then its cookie carries the token
        assert browser.get("/?token=s3cret").status_code == 200
        assert browser.get("/info").status_code == 200
    finally:
        worker.stop()


def occupy(worker, queued: int = 0) -> threading.Event:
    """Keep the model worker busy (and `queued` more jobs waiting) until the returned event is set."""
    gate, running = threading.Event(), threading.Event()
    worker.submit(lambda models: (running.set(), gate.wait(30)))
    assert running.wait(10)
    for _ in range(queued):
        worker.submit(lambda models: gate.wait(30))
    return gate


def test_a_full_queue_answers_503_with_retry_after_and_recovers(served_index):
    worker, app = start_service(served_index, max_queue=1)
    client = TestClient(app)
    try:
        gate = occupy(worker, queued=1)
        response = client.get("/search", params={"q": "red"})
        assert_one_sentence(response, 503)
        assert int(response.headers["Retry-After"]) >= 1
        gate.set()
        assert client.get("/search", params={"q": "red"}).status_code == 200
    finally:
        worker.stop()


def test_a_search_over_the_time_limit_gets_504_and_the_service_goes_on(served_index):
    worker, app = start_service(served_index, timeout_s=0.3)
    client = TestClient(app)
    try:
        gate = occupy(worker)
        assert "limit" in assert_one_sentence(client.get("/search", params={"q": "red"}), 504)
        gate.set()
        assert client.get("/search", params={"q": "red"}).status_code == 200
    finally:
        worker.stop()


def test_a_vanished_file_is_left_unreranked_and_the_rest_is_reranked(client):
    head = client.get("/search", params={"q": QUERY, "top": 3}).json()["results"]
    victim = Path(head[0]["path"])
    moved = victim.with_name(victim.name + ".away")
    victim.rename(moved)
    try:
        rows = client.get("/search", params={"q": QUERY, "rerank": 3}).json()["results"]
        assert [r["rerank_score"] is None for r in rows[:3]] == [False, False, True]
        assert rows[2]["path"] == head[0]["path"]
    finally:
        moved.rename(victim)


def test_the_service_keeps_serving_after_a_failed_rerank(client, monkeypatch):
    from discff_cli.search.pipeline import Reranker

    def broken(*args, **kwargs):
        raise RuntimeError("the U-Net ran out of memory")

    from fastapi.testclient import TestClient

    monkeypatch.setattr(Reranker, "_seed_store", broken)
    as_a_client_sees_it = TestClient(client.app, raise_server_exceptions=False)
    assert_one_sentence(as_a_client_sees_it.get("/search", params={"q": QUERY, "rerank": 3}), 500)
    assert client.get("/search", params={"q": QUERY, "top": 3}).status_code == 200
    monkeypatch.undo()
    again = client.get("/search", params={"q": QUERY, "rerank": 3})
    assert again.status_code == 200 and again.json()["results"][0]["rerank_score"] is not None


def test_serve_without_the_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what `import fastapi` meets where it is not installed
    result = run_cli("serve", catch=True)
    assert result.exit_code != 0 and "pip install -e '.[serve]'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_serve_warns_off_loopback_and_refuses_a_missing_index(tmp_path):
    result = run_cli("serve", "--host", "0.0.0.0", "--index", tmp_path / "none", catch=True)
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("warning: binding 0.0.0.0") and "--token" in lines[0]
    assert lines[-1].startswith("Error: ") and len(lines) == 2


def test_shortlist_jobs_go_ahead_of_queued_reranks():
    from discff_cli.service.worker import FAST, SLOW, ModelWorker

    worker = ModelWorker(lambda: "models", max_queue=4)
    worker.start()
    try:
        gate = occupy(worker)
        order: list[str] = []
        done = [worker.submit(lambda m: order.append("rerank"), SLOW),
                worker.submit(lambda m: order.append("shortlist"), FAST)]
        gate.set()
        for future in done:
            future.result(10)
        assert order == ["shortlist", "rerank"]
    finally:
        worker.stop()
