"""`python -m training.demo_models.clip_lastlayer`: the CLIP last-layer baseline on a 20-line demo-world few-shot file."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest_eval import world_eval_all, world_eval_dir  # noqa: F401
from discff_cli.cli import app
from discff_cli.clip_resolve import resolve_clip
from index.clip_model import WEIGHTS_FILE, load_clip
from training.demo_models.clip_lastlayer import SUMMARY_FILE, TRAINED, LastLayerConfig, main, run
from training.world.export import export_fewshot

CONFIG = LastLayerConfig(epochs=6, lr=1e-2, val_fraction=0.2, batch_size=16)
CONFIG_ARGS = ["--epochs", "6", "--lr", "1e-2", "--val-fraction", "0.2", "--batch-size", "16", "--device", "cpu"]


def _swap_red_and_blue(text: str) -> str:
    return " ".join({"red": "blue", "blue": "red"}.get(word, word) for word in text.split())


@pytest.fixture(scope="module")
def fewshot(tmp_path_factory) -> Path:
    """20 lines of the demo world's train split (nine hard negative captions each) with red and blue
    swapped in every caption: a labelling the demo CLIP gets wrong and a linear map of its features
    can learn, so a few epochs visibly change the model (on the true captions it is already right)."""
    path = tmp_path_factory.mktemp("fewshot") / "few.jsonl"
    export_fewshot(path, fraction=0.001)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    swapped = [{**r, "text": _swap_red_and_blue(r["text"]),
                "negative_texts": [_swap_red_and_blue(t) for t in r["negative_texts"]]} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in swapped))
    return path


@pytest.fixture(scope="module")
def tuned(fewshot, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tuned") / "clip"
    return out, run(fewshot, "demo", out, CONFIG, device="cpu")


@pytest.fixture(scope="module")
def cli_run(fewshot, tmp_path_factory) -> tuple[Path, str]:
    """The same run through the command line, a second time."""
    out = tmp_path_factory.mktemp("cli") / "clip"
    printed = io.StringIO()
    with redirect_stdout(printed):
        main([str(fewshot), "--clip", "demo", "--out", str(out), *CONFIG_ARGS])
    return out, printed.getvalue()


def _state(spec: str | Path) -> dict[str, torch.Tensor]:
    return load_clip(spec, device="cpu").model.state_dict()


def test_only_the_two_projections_differ_from_the_source(tuned):
    out, summary = tuned
    source, saved = _state(resolve_clip("demo")), _state(out)
    assert source.keys() == saved.keys()
    changed = {name for name in source if not torch.equal(source[name], saved[name])}
    assert changed == set(TRAINED)
    assert set(summary["trained_parameters"]) == set(TRAINED)


def test_the_tuned_directory_loads_and_embeds_differently(tuned, fewshot):
    from index.imageio import open_rgb

    out, summary = tuned
    source, mine = load_clip(resolve_clip("demo"), device="cpu"), load_clip(out, device="cpu")
    rows = [json.loads(line) for line in fewshot.read_text().splitlines()[:4]]
    texts, images = [r["text"] for r in rows], [open_rgb(fewshot.parent / r["image"]) for r in rows]
    assert not torch.allclose(torch.from_numpy(source.embed_texts(texts)), torch.from_numpy(mine.embed_texts(texts)))
    assert not torch.allclose(torch.from_numpy(source.embed_images(images)), torch.from_numpy(mine.embed_images(images)))
    recorded = json.loads((out / SUMMARY_FILE).read_text())
    assert recorded["source_fingerprint"] == source.fingerprint != mine.fingerprint == recorded["fingerprint"]


def test_training_lowers_the_loss_and_keeps_the_best_held_out_epoch(tuned):
    summary = tuned[1]
    curve = summary["curve"]
    assert curve[-1]["train_loss"] < curve[1]["train_loss"] / 2
    best = curve[summary["best_epoch"]]
    assert best["val_loss"] < curve[0]["val_loss"] / 2 and best["val_accuracy"] > curve[0]["val_accuracy"]
    assert best["val_accuracy"] == max(p["val_accuracy"] for p in curve)
    assert tuned[1]["n_val_triplets"] == 4 * CONFIG.negatives_per_line  # 20% of 20 lines, 3 negatives each


def test_the_same_seed_writes_identical_weights(tuned, cli_run):
    assert (tuned[0] / WEIGHTS_FILE).read_bytes() == (cli_run[0] / WEIGHTS_FILE).read_bytes()


def test_the_command_prints_one_line_per_epoch_and_a_summary(cli_run):
    lines = cli_run[1].splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [f"{e}/{CONFIG.epochs}" for e in range(CONFIG.epochs + 1)]
    assert lines[-1].startswith("best epoch") and str(cli_run[0]) in lines[-1]


def test_discff_eval_accepts_the_tuned_directory_as_clip(tuned, world_eval_all):
    result = CliRunner().invoke(app, ["eval", str(world_eval_all), "--clip", str(tuned[0]), "--no-diffusion",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["systems"]["clip"]["fingerprint"] == tuned[1]["fingerprint"]


def test_a_bad_line_is_one_sentence_on_stderr_and_exit_1(fewshot, tmp_path, capsys):
    bad = fewshot.parent / "bad.jsonl"  # beside the images its good line names
    bad.write_text(fewshot.read_text().splitlines()[0] + "\n" + '{"image": "nowhere.png", "text": "a red circle"}\n')
    with pytest.raises(SystemExit) as exit_:
        main([str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith("Error: ") and "bad.jsonl line 2:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
