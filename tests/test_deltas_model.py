"""Which diffusion model goes with --deltas is one rule (engine/deltas.py `model_for_deltas`) that every
command follows: without --model, the base model the deltas file records; with both, --model, and a
mismatch is one sentence. `serve` and `search` used to decide it differently."""

from __future__ import annotations

import json

import pytest

from conftest_index import build, run_cli, tiny_clip_dir, write_images  # noqa: F401

RECORDED = "/models/the-one-the-deltas-were-tuned-on"


def _deltas_file(path, base_model: str):
    import torch
    from safetensors.torch import save_file

    from discff_cli.engine.deltas import FORMAT

    save_file({"x": torch.zeros(1)}, str(path), metadata={"discff": json.dumps({"format": FORMAT,
                                                                                "base_model": base_model})})
    return path


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory, tiny_clip_dir):
    """Four images indexed with --model demo (the index's own reranking model)."""
    root = tmp_path_factory.mktemp("deltas_model")
    write_images(root / "images", 4)
    result, _ = build(root / "images", root / "idx", tiny_clip_dir, "--model", "demo")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture()
def loaded_models(monkeypatch):
    """The `model` of every Searcher built (search, serve, the API), in order."""
    from discff_cli.search import pipeline

    seen: list[str | None] = []
    real = pipeline.Searcher.__init__

    def recording(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.model)

    monkeypatch.setattr(pipeline.Searcher, "__init__", recording)
    return seen


def _serve(monkeypatch, *args: str):
    """`discff serve ARGS` up to the point where uvicorn would start (the worker has loaded its Searcher)."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    return run_cli("serve", *args)


@pytest.mark.parametrize("model_flags, expected", [((), RECORDED), (("--model", "demo"), "demo")])
def test_serve_and_search_load_the_same_model_for_the_same_deltas(demo_index, tmp_path, monkeypatch, loaded_models,
                                                                   model_flags, expected):
    monkeypatch.delenv("DISCFF_MODEL", raising=False)
    deltas = _deltas_file(tmp_path / "d.safetensors", RECORDED)
    index = demo_index / "idx"
    searched = run_cli("search", "a red circle", "--index", index, "--deltas", deltas, *model_flags, "--json")
    assert searched.exit_code == 0, searched.output
    served = _serve(monkeypatch, "--index", index, "--deltas", deltas, *model_flags)
    assert served.exit_code == 0, served.output
    assert loaded_models == [expected, expected]  # not the index's 'demo' when the deltas name another model


def test_the_rule_and_the_python_api(demo_index, tmp_path):
    from discff_cli.api import open_index
    from discff_cli.engine.config import DEFAULT_MODEL
    from discff_cli.engine.deltas import model_for_deltas

    deltas = _deltas_file(tmp_path / "d.safetensors", RECORDED)
    assert model_for_deltas(None, str(deltas), default=DEFAULT_MODEL) == RECORDED
    assert model_for_deltas("demo", str(deltas), default=DEFAULT_MODEL) == "demo"
    assert model_for_deltas(None, None, default="index-model") == "index-model"
    assert model_for_deltas(None, tmp_path / "unreadable", default="index-model") == "index-model"
    assert open_index(str(demo_index / "idx"), deltas=str(deltas), device="cpu").model == RECORDED
    assert open_index(str(demo_index / "idx"), device="cpu").model == "demo"  # the index's, without deltas


def test_a_model_the_deltas_were_not_tuned_on_is_one_sentence(demo_index, tmp_path):
    deltas = _deltas_file(tmp_path / "d.safetensors", RECORDED)
    result = run_cli("search", "a red circle", "--index", demo_index / "idx", "--deltas", deltas, "--model", "demo",
                     "--rerank", "2", "--steps", "1", "--levels", "1.0", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and RECORDED in message and "--model" in message
