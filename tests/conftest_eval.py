"""Fixtures for the eval tests: a small slice of the demo world's test split exported as eval JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world_eval_dir(tmp_path_factory) -> Path:
    """export-eval with 6 items per tag (single_object, three swap tags, winoground)."""
    from training.world.export import export_eval

    out = tmp_path_factory.mktemp("world_eval")
    export_eval(out, n_per_tag=6)
    return out


@pytest.fixture(scope="session")
def world_eval_all(world_eval_dir) -> Path:
    """Every exported file concatenated into one JSONL (all three item kinds are exercised)."""
    path = world_eval_dir / "all.jsonl"
    names = ["single_object", "attribute_swap", "relation_swap", "shape_swap", "winoground"]
    path.write_text("".join((world_eval_dir / f"{n}.jsonl").read_text() for n in names))
    return path
