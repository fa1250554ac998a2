"""ARO VG-Relation / VG-Attribution read from ARO's own layout: the crop is ARO's box, the true
caption is the answer, the relation (or attribute pair) is the tag."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from discff_cli.evaluation.datasets import load_benchmark
from discff_cli.errors import DiscffError

from conftest_benchmarks import isolated_cache  # noqa: F401
from conftest_benchmarks import DEMO_CLIP, NO_MODELS, gradient, json_rows, run_eval, solid


def _case(image, box, true, false, **extra):
    x, y, w, h = box
    return {"image_path": image, "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h,
            "true_caption": true, "false_caption": false, **extra}


@pytest.fixture()
def relation_root(tmp_path):
    """Three cases in visual_genome_relation.json over two images in images/."""
    root = tmp_path / "aro"
    pixels = gradient(root / "images" / "2339.png")
    solid(root / "images" / "107899.png", (30, 160, 60))
    cases = [
        _case("2339.png", (10, 5, 20, 30), "the horse is on the grass", "the grass is on the horse",
              relation_name="on"),
        _case("107899.png", (0, 0, 48, 40), "the man is eating the pizza", "the pizza is eating the man",
              relation_name="eating"),
        _case("2339.png", (40, 20, 24, 28), "the cup is on the table", "the table is on the cup",
              relation_name="on"),
    ]
    (root / "visual_genome_relation.json").write_text(json.dumps(cases))
    return root, pixels


def test_relation_case_becomes_a_choice_on_aros_crop(relation_root, tmp_path):
    root, pixels = relation_root
    items = load_benchmark("aro-relation", root, write_jsonl=tmp_path / "out" / "vgr.jsonl")
    assert [i.tag for i in items] == ["on", "eating", "on"]
    first = items[0]
    # ARO: caption_options = [false_caption, true_caption], a hit when the second wins
    assert first.kind == "image_to_texts" and first.answer == 1
    assert first.texts == ("the grass is on the horse", "the horse is on the grass")
    # the crop is image.crop((x, y, x + w, y + h)) of the stored pixels
    crop = np.asarray(Image.open(first.images[0]))
    assert crop.shape == (30, 20, 3)
    assert np.array_equal(crop, pixels[5:35, 10:30])
    # crops live beside the written JSONL, where `discff eval OUT` finds them
    assert first.images[0].parent == tmp_path / "out" / "vgr-images"
    line = json.loads((tmp_path / "out" / "vgr.jsonl").read_text().splitlines()[0])
    assert line["answer"] == 1 and line["tag"] == "on" and line["source"]["bbox"] == [10, 5, 20, 30]
    assert line["image"].startswith("vgr-images/")


def test_box_past_the_edge_is_padded_as_pil_crop_pads(tmp_path):
    """ARO does not clip boxes; PIL fills outside the image with black, and so do we."""
    root = tmp_path / "aro"
    pixels = gradient(root / "images" / "1.png", size=(32, 32))
    (root / "visual_genome_relation.json").write_text(json.dumps(
        [_case("1.png", (24, 24, 16, 16), "a b", "b a", relation_name="near")]))
    crop = np.asarray(Image.open(load_benchmark("aro-relation", root, write_jsonl=tmp_path / "o.jsonl")[0].images[0]))
    assert crop.shape == (16, 16, 3)
    assert np.array_equal(crop[:8, :8], pixels[24:, 24:]) and not crop[8:, :].any() and not crop[:, 8:].any()


def test_crop_ignores_exif_rotation_like_aro(tmp_path):
    """ARO crops Image.open(...).convert('RGB') — the stored pixels, never EXIF-rotated ones."""
    root = tmp_path / "aro"
    pixels = gradient(root / "images" / "r.png", size=(40, 20), exif_orientation=6)
    (root / "visual_genome_relation.json").write_text(json.dumps(
        [_case("r.png", (2, 3, 10, 5), "a b", "b a", relation_name="near")]))
    crop = np.asarray(Image.open(load_benchmark("aro-relation", root, write_jsonl=tmp_path / "o.jsonl")[0].images[0]))
    assert np.array_equal(crop, pixels[3:8, 2:12])


def test_crops_are_cached_by_source_and_box(relation_root, tmp_path, monkeypatch):
    root, _ = relation_root
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    first = load_benchmark("aro-relation", root)
    made = {p: p.stat().st_mtime_ns for p in (i.images[0] for i in first)}
    again = load_benchmark("aro-relation", root)
    assert all(str(p).startswith(str(cache)) for p in made)
    assert [i.images for i in again] == [i.images for i in first]
    assert {p: p.stat().st_mtime_ns for p in made} == made  # reused, not rewritten
    assert len(set(made)) == 3  # same source image, different boxes -> different crops


def test_attribution_tag_is_the_attribute_pair(tmp_path):
    root = tmp_path / "aro"
    solid(root / "images" / "5.png", (250, 250, 250))
    (root / "visual_genome_attribution.json").write_text(json.dumps(
        [_case("5.png", (0, 0, 10, 10), "the white plate and the black table", "the black plate and the white table",
               attributes=["white", "black"])]))
    item, = load_benchmark("aro-attribution", root / "visual_genome_attribution.json",
                           write_jsonl=tmp_path / "o.jsonl")
    assert item.tag == "white_black" and item.texts[item.answer] == "the white plate and the black table"


def test_max_per_tag_crops_only_what_it_keeps(relation_root, tmp_path):
    root, _ = relation_root
    out = tmp_path / "slice.jsonl"
    doc, rows = json_rows(run_eval("--benchmark", "aro-relation", str(root), "--max-per-tag", "1",
                                   "--write-jsonl", str(out), *DEMO_CLIP))
    assert doc["items"] == 2 and rows[("on", "accuracy")]["n"] == 1 and rows[("eating", "accuracy")]["n"] == 1
    assert len(list((tmp_path / "slice-images").glob("*.png"))) == 2


def test_written_jsonl_evaluates_to_the_same_figures(relation_root, tmp_path):
    root, _ = relation_root
    out = tmp_path / "vgr.jsonl"
    _, direct = json_rows(run_eval("--benchmark", "aro-relation", str(root), "--write-jsonl", str(out), *DEMO_CLIP))
    _, again = json_rows(run_eval(str(out), *DEMO_CLIP))
    assert again == direct and direct[("all", "accuracy")]["n"] == 3


def test_swapping_true_and_false_captions_flips_every_outcome(relation_root, tmp_path):
    """The answer follows the true caption: swapping it with the false one turns each hit into a miss."""
    root, _ = relation_root
    _, rows = json_rows(run_eval("--benchmark", "aro-relation", str(root), *DEMO_CLIP, cache=tmp_path / "c"))
    cases = json.loads((root / "visual_genome_relation.json").read_text())
    for case in cases:
        case["true_caption"], case["false_caption"] = case["false_caption"], case["true_caption"]
    (root / "visual_genome_relation.json").write_text(json.dumps(cases))
    _, swapped = json_rows(run_eval("--benchmark", "aro-relation", str(root), *DEMO_CLIP, cache=tmp_path / "c"))
    assert rows[("all", "accuracy")]["clip"]["hits"] + swapped[("all", "accuracy")]["clip"]["hits"] == 3


@pytest.mark.parametrize("change, fragment", [
    ({"bbox_w": 0}, '"bbox_w" must be a positive number'),
    ({"bbox_x": "12"}, '"bbox_x" must be a number'),
    ({"true_caption": ""}, '"true_caption" must be a non-empty string'),
    ({"relation_name": None}, '"relation_name" must be a non-empty string'),
])
def test_malformed_case_names_the_file_and_entry(relation_root, change, fragment):
    root, _ = relation_root
    cases = json.loads((root / "visual_genome_relation.json").read_text())
    cases[1].update(change)
    (root / "visual_genome_relation.json").write_text(json.dumps(cases))
    result = run_eval("--benchmark", "aro-relation", str(root), *NO_MODELS)
    assert result.exit_code == 1
    assert f"visual_genome_relation.json entry [1]: {fragment}." in result.output
    assert "Traceback" not in result.output


def test_missing_images_are_one_line_and_the_rest_is_scored(relation_root, tmp_path):
    root, _ = relation_root
    (root / "images" / "2339.png").unlink()
    doc, rows = json_rows(run_eval("--benchmark", "aro-relation", str(root), *DEMO_CLIP, cache=tmp_path / "c"))
    assert doc["items"] == 1 and rows[("eating", "accuracy")]["n"] == 1
    assert "1 image under" in doc_stderr(run_eval("--benchmark", "aro-relation", str(root), *DEMO_CLIP,
                                                  cache=tmp_path / "c"))


def doc_stderr(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "cannot be used" in line]
    assert len(lines) == 1, result.stderr
    assert "2339.png (file not found)" in lines[0] and "2 items that need them are skipped" in lines[0]
    return lines[0]


def test_no_annotation_file_is_one_sentence(tmp_path):
    result = run_eval("--benchmark", "aro-attribution", str(tmp_path), *NO_MODELS)
    assert result.exit_code == 1 and "has no visual_genome_attribution.json" in result.output


def test_all_images_missing_is_an_error(relation_root):
    root, _ = relation_root
    for image in (root / "images").iterdir():
        image.unlink()
    with pytest.raises(DiscffError, match="Nothing is left to evaluate"):
        load_benchmark("aro-relation", root, write_jsonl=root / "o.jsonl")
