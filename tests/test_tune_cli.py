"""`discff tune` through the CLI: line-numbered input errors, a short run, its file used by `discff score`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest_tune import FAST_CLI, colour_pairs, one_thread, write_images, write_jsonl  # noqa: F401
from discff_cli.cli import app
from discff_cli.engine.deltas import read_deltas_file
from training.tune import checkpoint_path


@pytest.fixture(autouse=True)
def _fast(one_thread):  # noqa: F811
    yield


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def assert_one_sentence_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert message.startswith("Error: ") and len(message.splitlines()) == 1, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("bad_line, why", [
    ('{"image": "red_0.png", "text": "a red picture", "label": 1', "not valid JSON"),
    ('{"image": "red_0.png", "label": 1}', "missing key 'text'"),
    ('{"image": "nowhere.png", "text": "a red picture", "label": 1}', "image file 'nowhere.png' does not exist"),
    ('{"image": "red_0.png", "text": "a red picture", "negative_texts": "a blue picture"}', "'negative_texts' must be a list"),
    ('{"image": "red_0.png", "text": "a red picture", "label": "yes"}', "'label' must be 0 or 1"),
    ('["red_0.png", "a red picture"]', "expected a JSON object"),
])
def test_a_bad_line_is_reported_with_its_line_number_before_any_model_loads(tmp_path, bad_line, why):
    write_images(tmp_path, copies=1)
    good = json.dumps({"image": "green_0.png", "text": "a green picture", "negative_texts": ["a red picture"]})
    path = write_jsonl(tmp_path / "pairs.jsonl", [good, "", good, bad_line, good])
    result = invoke(["tune", str(path), "--model", str(tmp_path / "no-such-model"), *FAST_CLI])
    assert_one_sentence_error(result, "pairs.jsonl line 4:", why)


def test_a_file_with_no_usable_triplet_is_an_error(tmp_path):
    write_images(tmp_path, copies=1)
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"image": "red_0.png", "text": "a red picture", "label": 1},
                                                   {"image": "red_0.png", "text": "a red picture", "label": 1}])
    result = invoke(["tune", str(path), "--model", str(tmp_path), *FAST_CLI])
    assert result.exit_code == 1 and "has no usable triplet" in result.output


def test_a_short_tune_run_changes_the_loss_and_writes_deltas_discff_score_accepts(tiny_sd_dir, colour_pairs, tmp_path):
    out = tmp_path / "tuned.safetensors"
    result = invoke(["tune", str(colour_pairs), "--model", str(tiny_sd_dir), "--epochs", "3", "--batch-size", "4",
                     "--lr", "1e-2", "--val-fraction", "0.25", "--negatives-per-line", "0", "--out", str(out),
                     "--json", *FAST_CLI])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    losses = [p["train_loss"] for p in summary["curve"][1:]]
    assert len(losses) == 3 and losses[-1] != losses[0]
    assert [p["epoch"] for p in summary["curve"]] == [0, 1, 2, 3]
    assert all(0.0 <= p["val_accuracy"] <= 1.0 for p in summary["curve"])
    assert summary["train_triplets"] == 12 and summary["val_triplets"] == 4
    _, meta = read_deltas_file(out)
    assert meta["curve"] == summary["curve"] and meta["best_epoch"] == summary["best_epoch"]
    assert not checkpoint_path(out).exists()

    image, captions = tmp_path / "red_0.png", tmp_path / "captions.txt"
    captions.write_text("a red picture\na blue picture\na green picture\n")
    base = invoke(["score", str(image), str(captions), "--model", str(tiny_sd_dir), "--json", *FAST_CLI])
    tuned = invoke(["score", str(image), str(captions), "--model", str(tiny_sd_dir), "--deltas", str(out),
                    "--json", *FAST_CLI])
    assert base.exit_code == 0 and tuned.exit_code == 0, tuned.output
    scores = lambda r: {x["text"]: x["score"] for x in json.loads(r.output)["results"]}  # noqa: E731
    if summary["best_epoch"] > 0:  # epoch 0 = the untouched base model
        assert scores(base) != scores(tuned)


def test_resume_continues_an_interrupted_run_through_the_cli(tiny_parts, tiny_sd_dir, colour_pairs, tmp_path):
    from discff_cli.engine.scorer import Scorer
    from discff_cli.options import EngineConfig
    from discff_cli.engine.deltas import detach_deltas
    from training.tune import TuneConfig, Tuner

    out = tmp_path / "d.safetensors"
    scorer = Scorer(tiny_parts, EngineConfig(steps=2, levels=(0.5,), device="cpu"))
    config = TuneConfig(epochs=2, batch_size=4, lr=1e-2, val_fraction=0.25)  # what the CLI below asks for
    interrupted = Tuner(scorer, colour_pairs, out, config).run(stop_after=2)
    detach_deltas(scorer)
    assert interrupted.interrupted and checkpoint_path(out).is_file()

    args = ["tune", str(colour_pairs), "--model", str(tiny_sd_dir), "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-2", "--val-fraction", "0.25", "--out", str(out), "--json", *FAST_CLI]
    other = invoke([*args[:5], "3", *args[6:], "--resume"])  # --epochs 3: not the run that was interrupted
    assert_one_sentence_error(other, "belongs to another run")
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [p["epoch"] for p in summary["curve"]] == [0, 1, 2] and out.is_file()
    assert not checkpoint_path(out).exists()


def test_resume_without_a_checkpoint_says_so(tiny_sd_dir, colour_pairs, tmp_path):
    result = invoke(["tune", str(colour_pairs), "--model", str(tiny_sd_dir), "--out", str(tmp_path / "x.safetensors"),
                     "--resume", *FAST_CLI])
    assert_one_sentence_error(result, "Nothing to resume")


def test_deltas_on_and_hard_negatives_change_what_tune_trains(tiny_sd_dir, colour_pairs, tmp_path):
    """--deltas-on qkvo writes query and output deltas beside key and value; --hard-negatives adds a
    line's first stated negatives to the ones drawn (each line here states 2)."""
    from safetensors import safe_open

    out = tmp_path / "qkvo.safetensors"
    args = ["tune", str(colour_pairs), "--model", str(tiny_sd_dir), "--epochs", "1", "--batch-size", "4",
            "--val-fraction", "0", "--negatives-per-line", "1", "--out", str(out), "--json", *FAST_CLI]
    drawn_only = json.loads(invoke(args + ["--hard-negatives", "0", "--deltas-on", "qkvo"]).stdout)
    with safe_open(str(out), framework="pt") as handle:
        slots = {key.split(".")[0] for key in handle.keys() if key.startswith("delta_")}
    assert slots == {"delta_q", "delta_k", "delta_v", "delta_o"}
    hard_first = json.loads(invoke(args + ["--hard-negatives", "1"]).stdout)
    with safe_open(str(out), framework="pt") as handle:
        assert {key.split(".")[0] for key in handle.keys() if key.startswith("delta_")} == {"delta_k", "delta_v"}
    assert drawn_only["train_triplets"] == 8 and hard_first["train_triplets"] == 16
