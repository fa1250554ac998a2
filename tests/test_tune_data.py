"""The three JSONL shapes become the triplets the issue describes; sampled negatives come from other lines."""

from __future__ import annotations

import random

from conftest_tune import write_images, write_jsonl
from training.tune.data import Triplet, epoch_triplets, read_examples, split_examples


def test_labelled_pairs_sharing_an_image_or_a_text_form_triplets(tmp_path):
    write_images(tmp_path, copies=1)
    rows = [{"image": "red_0.png", "text": "a red picture", "label": 1},
            {"image": "red_0.png", "text": "a blue picture", "label": 0},        # same image: a negative text
            {"image": "blue_0.png", "text": "a red picture", "label": 0},        # same text: a negative image
            {"image": "green_0.png", "text": "a green picture", "negative_images": ["yellow_0.png"]},
            {"image": "yellow_0.png", "text": "a yellow picture", "negative_texts": ["a green picture"], "tag": "x"}]
    examples = read_examples(write_jsonl(tmp_path / "pairs.jsonl", rows))
    triplets = epoch_triplets(examples, examples, random.Random(0), per_line=0)
    p = lambda name: str((tmp_path / name).resolve())  # noqa: E731
    assert sorted(triplets, key=str) == sorted([
        Triplet(p("red_0.png"), "a red picture", neg_text="a blue picture"),
        Triplet(p("red_0.png"), "a red picture", neg_image=p("blue_0.png")),
        Triplet(p("green_0.png"), "a green picture", neg_image=p("yellow_0.png")),
        Triplet(p("yellow_0.png"), "a yellow picture", neg_text="a green picture")], key=str)
    one_each = epoch_triplets(examples, examples, random.Random(0), per_line=1)
    assert len(one_each) == 3 and set(one_each) <= set(triplets)


def test_a_positive_without_negatives_gets_one_sampled_from_the_other_lines_fresh_each_epoch(tmp_path):
    made = write_images(tmp_path, copies=2)
    rows = [{"image": f, "text": f"a {c} picture number {i}"} for i, (f, c) in enumerate(made)]
    examples = read_examples(write_jsonl(tmp_path / "pairs.jsonl", rows))
    epochs = [epoch_triplets(examples, examples, random.Random(seed)) for seed in range(3)]
    for triplets in epochs:
        assert len(triplets) == len(rows)
        for t in triplets:
            neg_image, neg_text = t.negative_pair
            assert (neg_image, neg_text) != (t.image, t.text)
            assert neg_text in {e.text for e in examples} and neg_image in {e.image for e in examples}
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


def test_validation_holds_out_whole_lines_deterministically(tmp_path):
    made = write_images(tmp_path, copies=2)
    rows = [{"image": f, "text": f"a {c} picture", "negative_texts": ["nothing"]} for f, c in made]
    examples = read_examples(write_jsonl(tmp_path / "pairs.jsonl", rows))
    train, val = split_examples(examples, 0.25, seed=3)
    assert len(val) == 2 and len(train) == 6 and not set(train) & set(val)
    assert split_examples(examples, 0.25, seed=3) == (train, val)
    assert split_examples(examples, 0.0, seed=3) == (examples, [])


def test_the_first_hard_negatives_of_a_line_are_trained_every_epoch_and_the_rest_drawn(tmp_path):
    write_images(tmp_path, copies=1)
    negatives = ["a red swap", "a red relation", "easy one", "easy two", "easy three"]
    rows = [{"image": "red_0.png", "text": "a red picture", "negative_texts": negatives}]
    examples = read_examples(write_jsonl(tmp_path / "pairs.jsonl", rows))
    for seed in range(5):
        drawn = [t.neg_text for t in epoch_triplets(examples, examples, random.Random(seed), per_line=1, hard=2)]
        assert drawn[:2] == ["a red swap", "a red relation"] and len(drawn) == 3 and drawn[2].startswith("easy")
    everything = epoch_triplets(examples, examples, random.Random(0), per_line=0, hard=2)
    assert [t.neg_text for t in everything] == negatives
