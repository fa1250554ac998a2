"""`discff serve` answers clip-retrieval's back-end protocol: /indices-list, /knn-service (ClipClient's
requests, unchanged), /metadata; discff's rerank through an extra field; bad input is a 400 sentence."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys

import numpy as np
import pytest

from conftest_serve import ENGINE_FLAGS, client, live_server, served_index, service, tiny_clip_dir  # noqa: F401
from conftest_index import run_cli


def _clip_client_module():
    """rom1504/clip-retrieval's clip_client.py from the installed package, loaded on its own: the
    package's __init__ imports its Flask back end, which the client does not need."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed (pip install clip-retrieval --no-deps)")
    path = f"{list(spec.submodule_search_locations)[0]}/clip_client.py"
    loaded = importlib.util.spec_from_file_location("clip_retrieval_client", path)
    module = importlib.util.module_from_spec(loaded)
    sys.modules.setdefault("clip_retrieval_client", module)
    loaded.loader.exec_module(module)
    return module


def _body(**fields) -> dict:
    """A request as ClipClient sends it (its defaults), with `fields` changed."""
    body = {"text": None, "image": None, "image_url": None, "embedding_input": None, "deduplicate": True,
            "use_safety_model": True, "use_violence_detector": True, "indice_name": "idx", "use_mclip": False,
            "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image", "num_images": 5,
            "num_result_ids": 5}
    body.update(fields)
    return body


def _search_json(index, *args) -> list[dict]:
    result = run_cli("search", "a red square", "--index", index, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


def test_indices_list_names_the_index(client):
    assert client.get("/indices-list").json() == ["idx"]


def test_the_real_clip_client_gets_the_protocols_rows_in_clip_order(service, served_index):
    module = _clip_client_module()
    worker, test_client = service
    expected = _search_json(served_index, "--top", "6")
    with live_server(test_client.app) as port:
        client = module.ClipClient(f"http://127.0.0.1:{port}/knn-service", indice_name="idx", num_images=6,
                                   deduplicate=False)
        rows = client.query(text="a red square")
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    for row, want in zip(rows, expected):
        assert set(row) >= {"id", "similarity", "caption", "url"}
        assert row["similarity"] == pytest.approx(want["clip_score"], abs=1e-6)
        assert row["url"] == f"http://127.0.0.1:{port}/images/{row['id']}"
        served = test_client.get(f"/images/{row['id']}").status_code  # the fixture's link outside the root is refused
        assert served == (404 if row["path"].startswith("link-to-outside") else 200)


def test_rerank_field_returns_the_reranked_order_of_discff_search(client, served_index):
    answer = client.post("/knn-service", json=_body(text="a red square", num_images=4, rerank=4,
                                                    deduplicate=False))
    assert answer.status_code == 200, answer.text
    assert set(answer.headers["x-discff-ignored"].split(", ")) >= {"use_safety_model", "use_violence_detector"}
    expected = _search_json(served_index, "--top", "4", "--rerank", "4", *ENGINE_FLAGS)
    rows = answer.json()
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    assert all(r["rerank_score"] == pytest.approx(e["rerank_score"], rel=1e-4, abs=1e-5) for r, e in zip(rows, expected))


def test_image_and_embedding_queries_find_the_image_itself(client, served_index):
    from index.search import SearchIndex

    index = SearchIndex(served_index)
    row = 3
    data = (index.root / index.rel_by_row[row]).read_bytes()
    by_image = client.post("/knn-service", json=_body(image=base64.b64encode(data).decode(), deduplicate=False))
    assert by_image.status_code == 200, by_image.text
    assert by_image.json()[0]["id"] == row and by_image.json()[0]["similarity"] == pytest.approx(1.0, abs=1e-2)
    vector = np.asarray(index.embeddings[row], np.float32).tolist()
    by_vector = client.post("/knn-service", json=_body(embedding_input=vector, num_images=3, deduplicate=False))
    assert by_vector.status_code == 200 and by_vector.json()[0]["id"] == row


def test_deduplicate_drops_near_identical_images(tmp_path, tiny_clip_dir):
    from PIL import Image

    from conftest_serve import start_service
    from conftest_index import build

    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate([(200, 20, 20), (200, 20, 20), (20, 200, 20)]):
        Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
    (folder / "1.png").write_bytes((folder / "1.png").read_bytes() + b"\0")  # other bytes, same picture
    result, _ = build(folder, tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0, result.output
    worker, app = start_service(tmp_path / "idx")
    try:
        from fastapi.testclient import TestClient

        client = TestClient(app)
        plain = client.post("/knn-service", json=_body(text="red", indice_name=None, deduplicate=False)).json()
        deduped = client.post("/knn-service", json=_body(text="red", indice_name=None, deduplicate=True)).json()
        assert len(plain) == 3 and len(deduped) == 2
        assert {r["id"] for r in deduped} < {r["id"] for r in plain}
    finally:
        worker.stop()


@pytest.mark.parametrize("body, words", [
    ("not json", "must be a JSON object"),
    ([1, 2], "must be a JSON object"),
    ({"modality": "image", "num_images": 3}, "Give one of text, image"),
    (_body(text="red", indice_name="laion5B"), "Unknown indice_name 'laion5B'"),
    (_body(text="red", modality="text"), "image embeddings only"),
    (_body(text="red", num_images=0), "num_images must be from 1"),
    (_body(text="red", num_images="ten"), "num_images must be a whole number"),
    (_body(text="red", rerank=10 ** 6), "rerank must be from 0"),
    (_body(image_url="http://example.com/a.jpg"), "does not download images"),
    (_body(image="bm90IGFuIGltYWdl"), "cannot be read as an image"),
    (_body(embedding_input=[0.1, 0.2]), "embedding_input must be a list of"),
    (_body(embedding_input=[1.0, 2.0], rerank=3), "embedding_input must be"),
    (_body(text="red", image="aGk="), "Give one query, not text and image"),
    (_body(text="x" * 1000), "characters long"),
    (_body(text="red", deduplicate="yes"), "deduplicate must be true or false"),
])
def test_bad_requests_are_a_400_sentence_and_the_service_goes_on(client, body, words):
    answer = client.post("/knn-service", content=body if isinstance(body, str) else json.dumps(body))
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"] and answer.json()["error"].endswith(".")
    assert client.get("/search", params={"q": "red", "top": 2}).status_code == 200


def test_rerank_of_an_image_query_and_wrong_methods_are_refused(client, served_index):
    from index.search import SearchIndex

    index = SearchIndex(served_index)
    vector = np.asarray(index.embeddings[0], np.float32).tolist()
    answer = client.post("/knn-service", json=_body(embedding_input=vector, rerank=3))
    assert answer.status_code == 400 and "needs a text query" in answer.json()["error"]
    wrong = client.get("/knn-service")
    assert wrong.status_code == 405 and "use POST" in wrong.json()["error"]


def test_metadata_gives_caption_url_and_path_of_ids(client):
    answer = client.post("/metadata", json={"ids": [0, 2], "indice_name": "idx"})
    assert answer.status_code == 200, answer.text
    assert [r["id"] for r in answer.json()] == [0, 2]
    assert all("path" in r["metadata"] and "caption" in r["metadata"] for r in answer.json())
    bad = client.post("/metadata", json={"ids": [10 ** 6]})
    assert bad.status_code == 400 and "ids" in bad.json()["error"]
