"""`discff demo` runs the whole pipeline offline with the bundled models."""

from __future__ import annotations

import json

from click.testing import CliRunner

from discff_cli.cli import app


def test_demo_writes_gallery_indexes_it_and_reranks_searches(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", str(out), "--images", "40", "--queries", "2", "--rerank", "4",
                                      "--steps", "2", "--levels", "0.5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").glob("*.png"))) == 40
    manifest = json.loads((out / ".discff" / "manifest.json").read_text())
    assert manifest["count"] == 40 and manifest["model"] == "demo"
    assert result.stdout.count("target scene-") == 2
    assert "rerank score" in result.stdout
