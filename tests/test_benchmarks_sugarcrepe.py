"""SugarCrepe read from its repo's data/*.json over COCO val2017: the positive caption is the
answer, the category file is the tag, and COCO's separate download is found or asked for."""

from __future__ import annotations

import json

import pytest

from discff_cli.evaluation.datasets import load_benchmark

from conftest_benchmarks import isolated_cache  # noqa: F401
from conftest_benchmarks import DEMO_CLIP, NO_MODELS, json_rows, run_eval, solid

CATEGORIES = {
    "swap_att": {"0": {"filename": "000000544519.jpg", "caption": "a red cube on a blue table",
                       "negative_caption": "a blue cube on a red table"},
                 "1": {"filename": "000000057597.jpg", "caption": "a green ball", "negative_caption": "a yellow ball"}},
    "replace_rel": {"0": {"filename": "000000544519.jpg", "caption": "a cube on a table",
                          "negative_caption": "a cube under a table"}},
    "add_obj": {"0": {"filename": "000000029393.jpg", "caption": "a dog", "negative_caption": "a dog and a cat"},
                "1": {"filename": "000000057597.jpg", "caption": "a ball", "negative_caption": "a ball and a bat"}},
}


@pytest.fixture()
def repo(tmp_path):
    """The repo as cloned (data/<category>.json) with COCO where its README suggests: data/coco/images/val2017."""
    root = tmp_path / "sugar-crepe"
    for category, rows in CATEGORIES.items():
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{category}.json").write_text(json.dumps(rows, indent=4))
    coco = root / "data" / "coco" / "images" / "val2017"
    for i, name in enumerate(["000000544519.jpg", "000000057597.jpg", "000000029393.jpg"]):
        solid(coco / name, (40 * i, 200 - 40 * i, 90))
    return root


def test_entries_become_choices_with_the_positive_caption_as_answer(repo):
    items = load_benchmark("sugarcrepe", repo)
    # the repo's category order (main_eval.py's data_dict), then file order within a category
    assert [i.tag for i in items] == ["add_obj", "add_obj", "replace_rel", "swap_att", "swap_att"]
    first = items[3]
    assert first.kind == "image_to_texts" and first.texts[first.answer] == "a red cube on a blue table"
    assert first.texts == ("a red cube on a blue table", "a blue cube on a red table")
    assert first.images[0] == repo / "data" / "coco" / "images" / "val2017" / "000000544519.jpg"


def test_eval_reports_accuracy_per_category_and_max_per_tag(repo, tmp_path):
    doc, rows = json_rows(run_eval("--benchmark", "sugarcrepe", str(repo / "data"), *DEMO_CLIP))
    assert doc["items"] == 5 and rows[("swap_att", "accuracy")]["n"] == 2 and rows[("all", "accuracy")]["n"] == 5
    assert rows[("swap_att", "accuracy")]["chance"] == 0.5
    doc, rows = json_rows(run_eval("--benchmark", "sugarcrepe", str(repo), "--max-per-tag", "1", *DEMO_CLIP))
    assert doc["items"] == 3 and rows[("add_obj", "accuracy")]["n"] == 1


def test_swapping_positive_and_negative_flips_every_outcome(repo, tmp_path):
    _, rows = json_rows(run_eval("--benchmark", "sugarcrepe", str(repo), *DEMO_CLIP))
    for category, entries in CATEGORIES.items():
        flipped = {k: {**v, "caption": v["negative_caption"], "negative_caption": v["caption"]}
                   for k, v in entries.items()}
        (repo / "data" / f"{category}.json").write_text(json.dumps(flipped))
    _, swapped = json_rows(run_eval("--benchmark", "sugarcrepe", str(repo), *DEMO_CLIP))
    assert rows[("all", "accuracy")]["clip"]["hits"] + swapped[("all", "accuracy")]["clip"]["hits"] == 5


def test_written_jsonl_points_at_the_coco_images(repo, tmp_path):
    out = tmp_path / "elsewhere" / "sc.jsonl"
    load_benchmark("sugarcrepe", repo, write_jsonl=out)
    line = json.loads(out.read_text().splitlines()[0])
    assert line == {"image": "../sugar-crepe/data/coco/images/val2017/000000029393.jpg",
                    "texts": ["a dog", "a dog and a cat"], "answer": 0, "tag": "add_obj",
                    "source": {"benchmark": "sugarcrepe", "file": "add_obj.json", "entry": "0"}}
    assert not (tmp_path / "elsewhere" / "sc-images").exists()  # nothing to make: COCO files are used in place


def test_images_elsewhere_need_images_option(repo, tmp_path):
    moved = tmp_path / "coco-val2017"
    (repo / "data" / "coco" / "images" / "val2017").rename(moved)
    result = run_eval("--benchmark", "sugarcrepe", str(repo), *NO_MODELS)
    assert result.exit_code == 1 and "pass --images DIR" in result.output
    assert len(load_benchmark("sugarcrepe", repo, images=moved)) == 5


def test_malformed_entry_names_the_file_and_key(repo):
    rows = json.loads((repo / "data" / "swap_att.json").read_text())
    del rows["1"]["negative_caption"]
    (repo / "data" / "swap_att.json").write_text(json.dumps(rows))
    result = run_eval("--benchmark", "sugarcrepe", str(repo), *NO_MODELS)
    assert result.exit_code == 1
    assert 'swap_att.json entry "1": "negative_caption" must be a non-empty string.' in result.output


def test_missing_coco_images_are_one_line(repo):
    (repo / "data" / "coco" / "images" / "val2017" / "000000057597.jpg").unlink()
    result = run_eval("--benchmark", "sugarcrepe", str(repo), *DEMO_CLIP)
    doc, _ = json_rows(result)
    assert doc["items"] == 3
    assert sum("cannot be used" in line for line in result.stderr.splitlines()) == 1
    assert "1 image under" in result.stderr and "2 items that need them are skipped" in result.stderr


def test_benchmark_options_without_benchmark_and_folders_without_it(repo):
    result = run_eval(str(repo), "--write-jsonl", "x.jsonl", *NO_MODELS)
    assert result.exit_code == 1 and "go with --benchmark NAME" in result.output
    result = run_eval(str(repo), *NO_MODELS)
    assert result.exit_code == 1 and "is a folder" in result.output
