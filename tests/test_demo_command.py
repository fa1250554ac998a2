"""`discff demo` runs the whole pipeline offline with the bundled models and measures reranking against CLIP."""

from __future__ import annotations

import json

from click.testing import CliRunner

from discff_cli.cli import app
from discff_cli.engine.config import DEFAULT_SCORE, SCORES
from discff_cli.engine.models import DEMO_TUNED_DELTAS

TUNED = f"{DEFAULT_SCORE} tuned"  # the shipped deltas were tuned for the default score

ARGS = ["--images", "40", "--queries", "3", "--rerank", "4", "--steps", "1", "--levels", "0.5", "--device", "cpu"]


def test_demo_writes_gallery_indexes_it_and_reports_every_score_against_clip(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["demo", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").glob("*.png"))) == 40
    manifest = json.loads((out / ".discff" / "manifest.json").read_text())
    assert manifest["count"] == 40 and manifest["model"] == "demo"
    for label in ("CLIP alone", *(f"+{s}" for s in SCORES), f"+{DEFAULT_SCORE}*", f"+{TUNED}", "* = default",
                  "two-object", "single-object", "R@1 vs CLIP", "R@1 (95% CI)", "mean rank"):
        assert label in result.stdout
    assert f"two-object queries: reranking with {DEFAULT_SCORE} " in result.stdout
    assert f"two-object queries: reranking with {TUNED} " in result.stdout
    assert f"--deltas {DEMO_TUNED_DELTAS}" in result.stdout  # the search to try uses the same deltas
    assert f'discff search "' in result.stdout and f"--index {out / '.discff'} --rerank 4" in result.stdout


def test_demo_json_has_one_row_per_query_kind_and_system_with_paired_changes(tmp_path):
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "d"), *ARGS, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {(r["queries"], r["system"]) for r in doc["rows"]} == {
        (k, s) for k in ("two-object", "single-object") for s in ("clip", *SCORES, TUNED)}
    assert doc["tuned"] == {"deltas": str(DEMO_TUNED_DELTAS), "score": DEFAULT_SCORE, "system": TUNED}
    for row in doc["rows"]:
        assert row["n"] == 3 and 1 <= row["mean_rank"] <= 5 and 0 <= row["R@1"]["value"] <= row["R@5"]["value"]
        assert ("vs_clip_R@1" in row) == (row["system"] != "clip")
    # twice (zero-shot, tuned) 3 + 3 queries x 4 candidates x 1 condition, plus one empty-prompt pass per
    # distinct candidate image each time (the deltas change the empty prompt's keys and values too)
    assert 48 < doc["unet_passes"] <= 96 and doc["score"] == DEFAULT_SCORE
    assert_fits_80_columns(doc)

    untuned = json.loads(CliRunner().invoke(app, ["demo", str(tmp_path / "d"), *ARGS, "--json", "--no-tuned"]).stdout)
    assert untuned["tuned"] is None and {r["system"] for r in untuned["rows"]} == {"clip", *SCORES}
    assert untuned["unet_passes"] == doc["unet_passes"] // 2
    zero_shot = {(r["queries"], r["system"]): r for r in untuned["rows"]}
    assert all(zero_shot[(r["queries"], r["system"])] == r for r in doc["rows"] if r["system"] != TUNED)


def assert_fits_80_columns(doc: dict) -> None:
    """In an 80-column terminal every demo table keeps every column, interval and p-value whole."""
    from discff_cli.commands.demo import report_tables
    from discff_cli.render.output import table_lines

    for title, columns, rows in report_tables(doc):
        text, shortened = table_lines(title, columns, rows, None, 80)
        assert not shortened and max(len(line) for line in text.splitlines()) <= 80, text
        for column in columns:
            assert column in text
        for row in rows:
            line = next(line for line in text.splitlines() if str(row[1]) in line and str(row[0]) in line
                        and all(str(cell) in line for cell in row))
            assert "…" not in line
