"""`discff eval` end to end on a slice of the demo world: CLIP and Discffusion from one run, well-formed figures."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from discff_cli.cli import app

from conftest_eval import world_eval_all, world_eval_dir  # noqa: F401
from conftest_index import tiny_clip_dir  # noqa: F401

FAST_ENGINE = ["--steps", "1", "--levels", "0.5", "--device", "cpu"]


def _eval(*args):
    return CliRunner().invoke(app, ["eval", *args])


@pytest.fixture(scope="module")
def both_systems(world_eval_all, tiny_clip_dir, tiny_sd_dir):
    result = _eval(str(world_eval_all), "--clip", str(tiny_clip_dir), "--model", str(tiny_sd_dir), *FAST_ENGINE,
                   "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


from discff_cli.engine.config import SCORES  # noqa: E402 - every family is a column by default


def test_json_reports_clip_and_every_score_per_tag_with_intervals(both_systems):
    doc = both_systems
    assert doc["items"] == 4 * 6 + 18
    assert doc["kinds"] == {"image_to_texts": 24, "matrix": 18}
    assert set(doc["systems"]) == {"clip", *SCORES}
    for score in SCORES:
        assert doc["systems"][score]["score"] == score and doc["systems"][score]["config"]["steps"] == 1
    # one set of passes for every column: every pair once, plus one empty-prompt pass per image
    passes = doc["systems"]["denoise"]
    images = passes["empty_prompt_passes"]
    assert passes["unet_passes"] == doc["pairs"] + images and 0 < images < doc["pairs"]
    assert passes["passes_shared_by"] == list(SCORES)
    rows = {(r["tag"], r["metric"]): r for r in doc["rows"]}
    for tag in ("attribute_swap", "relation_swap", "shape_swap"):
        assert rows[(tag, "accuracy")]["n"] == 6 and rows[(tag, "accuracy")]["chance"] == 0.5
        assert rows[(tag, "group")]["n"] == 6 and rows[(tag, "group")]["chance"] == pytest.approx(1 / 6, abs=1e-4)
    assert rows[("single_object", "R@5")]["n"] == 6
    assert rows[("all", "accuracy")]["n"] == 24
    for row in doc["rows"]:  # every score against the first, item by item
        assert [c["systems"] for c in row["paired"]] == [[SCORES[0], s] for s in SCORES[1:]]
        for system in ("clip", *SCORES):
            fig = row[system]
            lo, hi = fig["ci95"]
            assert 0 <= lo <= fig["value"] <= hi <= 1
            assert fig["value"] == pytest.approx(fig["hits"] / row["n"], abs=1e-4)


def test_scores_are_reproducible_run_to_run(both_systems, world_eval_all, tiny_clip_dir, tiny_sd_dir):
    again = _eval(str(world_eval_all), "--clip", str(tiny_clip_dir), "--model", str(tiny_sd_dir), *FAST_ENGINE,
                  "--json")
    assert json.loads(again.stdout)["rows"] == both_systems["rows"]


def test_table_output_and_skipping_one_side(world_eval_dir, tiny_clip_dir):
    result = _eval(str(world_eval_dir / "single_object.jsonl"), "--clip", str(tiny_clip_dir), "--no-diffusion")
    assert result.exit_code == 0, result.output
    assert "CLIP" in result.stdout and "Discffusion" not in result.stdout
    assert "single_object" in result.stdout and "Wilson" in result.stdout


def test_max_per_tag_takes_a_slice(world_eval_all, tiny_clip_dir):
    result = _eval(str(world_eval_all), "--clip", str(tiny_clip_dir), "--no-diffusion", "--max-per-tag", "2", "--json")
    doc = json.loads(result.stdout)
    assert doc["items"] == 4 * 2 and doc["rows"][0]["n"] == 2  # 4 tags (winoground items share the swap tags)


def test_nothing_to_do_is_an_error(world_eval_all):
    result = _eval(str(world_eval_all), "--no-clip", "--no-diffusion")
    assert result.exit_code == 1 and "nothing to evaluate" in result.output


def test_demo_clip_figures_on_the_world_slice(world_eval_all):
    """`--clip demo` reproduces the documented figures (0.97-0.99 on single-object, colour and shape swaps;
    relation swap near chance) within small-sample tolerance."""
    result = _eval(str(world_eval_all), "--clip", "demo", "--no-diffusion", "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["tag"], r["metric"]): r["clip"]["value"] for r in json.loads(result.stdout)["rows"]}
    assert rows[("single_object", "accuracy")] >= 5 / 6
    assert rows[("attribute_swap", "accuracy")] >= 5 / 6
    assert rows[("shape_swap", "accuracy")] >= 5 / 6


@pytest.fixture(scope="module")
def random_deltas(tiny_parts, tmp_path_factory):
    """Deltas for the tiny model, large enough to move its scores (what tune would write, minus the training)."""
    import torch

    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import Scorer
    from discff_cli.engine.deltas import attach_deltas, detach_deltas, save_deltas_file

    scorer = Scorer(tiny_parts, EngineConfig(steps=1, levels=(0.5,), device="cpu"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in attach_deltas(scorer):
            p.copy_(torch.randn(p.shape, generator=generator))
    path = save_deltas_file(tmp_path_factory.mktemp("deltas") / "d.safetensors", scorer, 0)
    detach_deltas(scorer)
    return path


def test_deltas_give_zero_shot_and_tuned_columns_from_one_run(both_systems, world_eval_all, tiny_sd_dir,
                                                              random_deltas):
    args = [str(world_eval_all), "--no-clip", "--model", str(tiny_sd_dir), "--deltas", str(random_deltas),
            *FAST_ENGINE, "--score", "discffusion", "--json"]
    result = _eval(*args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["systems"]) == {"discffusion", "discffusion_tuned"}
    assert doc["systems"]["discffusion"]["deltas"] is None
    assert doc["systems"]["discffusion_tuned"]["deltas"] == str(random_deltas)
    assert doc["systems"]["discffusion_tuned"]["unet_passes"] == doc["systems"]["discffusion"]["unet_passes"]
    # the zero-shot column is the plain run's, and the deltas really change the figures
    assert [r["discffusion"] for r in doc["rows"]] == [r["discffusion"] for r in both_systems["rows"]]
    assert [r["discffusion_tuned"] for r in doc["rows"]] != [r["discffusion"] for r in doc["rows"]]
    for row in doc["rows"]:  # the paired change is counted on the same items as the two columns
        [change] = row["paired"]
        assert change["systems"] == ["discffusion", "discffusion_tuned"] and 0 <= change["p_value"] <= 1
        assert change["gained"] - change["lost"] == row["discffusion_tuned"]["hits"] - row["discffusion"]["hits"]

    only = json.loads(_eval(*args, "--tuned-only").stdout)
    assert set(only["systems"]) == {"discffusion_tuned"}
    assert [r["discffusion_tuned"] for r in only["rows"]] == [r["discffusion_tuned"] for r in doc["rows"]]


def test_tuned_only_without_deltas_and_deltas_of_another_model_are_errors(world_eval_all, random_deltas, tmp_path):
    result = _eval(str(world_eval_all), "--no-clip", "--tuned-only", *FAST_ENGINE)
    assert result.exit_code == 1 and "--tuned-only needs --deltas" in result.output
    other = _eval(str(world_eval_all), "--no-clip", "--model", "demo", "--deltas", str(random_deltas), *FAST_ENGINE)
    assert other.exit_code == 1 and "Traceback" not in other.output
    assert "were made for base model" in other.output and "re-run `discff tune`" in other.output


def test_tuned_columns_are_paired_against_zero_shot_and_against_clip():
    """The paper's two questions, item by item: does tuning help the score, and does it beat CLIP."""
    from discff_cli.commands.eval_cmd import paired_systems

    outcomes = {name: [] for name in ("clip", "denoise", "discffusion", "denoise_tuned", "discffusion_tuned")}
    assert paired_systems(("denoise", "discffusion"), outcomes) == [
        ("denoise", "discffusion"), ("denoise", "denoise_tuned"), ("discffusion", "discffusion_tuned"),
        ("clip", "denoise_tuned"), ("clip", "discffusion_tuned")]
    del outcomes["clip"]
    assert ("clip", "denoise_tuned") not in paired_systems(("denoise",), outcomes)
