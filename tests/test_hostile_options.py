"""Hostile options and pathological JSON: refused before any model loads, one sentence, no traceback;
JSON output never holds NaN. Includes bounded property-based tests (hypothesis) over the JSONL readers
and the engine options."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_index import run_cli

# A model that does not exist: if validation did not come first, the error would name it.
NO_MODEL = ["--model", "/nonexistent/sd"]
BOUNDED = settings(max_examples=25, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture()
def score_args(sample_image, tmp_path):
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    return ["score", str(sample_image), str(captions), *NO_MODEL]


def _usage_error(result, option: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and option in result.output
    assert "/nonexistent/sd" not in result.output  # refused before the model was looked at


@pytest.mark.parametrize("option, value", [
    ("--device", ""), ("--device", "gpu"), ("--device", "cuda:x"), ("--device", "cpu; rm -rf /"),
    ("--seed", str(2**64)), ("--seed", "-1"),
    ("--lse-lambda", "nan"), ("--lse-lambda", "inf"), ("--lse-lambda", "1e308"), ("--lse-lambda", "-inf"),
])
def test_engine_options_are_validated_before_any_model(option, value, score_args):
    _usage_error(run_cli(*score_args, option, value), option)


@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--margin", "--val-fraction"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_tune_floats_must_be_finite(option, value, tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("{}\n")
    _usage_error(run_cli("tune", pairs, *NO_MODEL, option, value), option)


def test_index_build_device_is_validated(tmp_path):
    (tmp_path / "imgs").mkdir()
    _usage_error(run_cli("index", "build", tmp_path / "imgs", "--device", "", "--clip", "/nonexistent/sd"),
                 "--device")


def test_valid_extremes_are_accepted(score_args):
    result = run_cli(*score_args, "--seed", str(2**63 - 1), "--lse-lambda", "1e4", "--device", "cpu")
    assert result.exit_code == 1 and "/nonexistent/sd" in result.output  # got past the options to the model


DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = '{"image": "a.png", "text": "x", "label": ' + "9" * 5000 + "}"


@pytest.mark.parametrize("line, why", [(DEEP, "nested too deeply"), (HUGE_INT, "number too long"),
                                       ('{"image": "a.png", "text": "x", "label": NaN}', "NaN")])
@pytest.mark.parametrize("command", ["tune", "eval"])
def test_pathological_json_is_a_numbered_line_error(command, line, why, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('\n\n' + line + "\n")
    result = run_cli(command, path, *NO_MODEL, "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{path} line 3:" in result.stderr and why in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_print_json_never_prints_nan(capsys):
    import numpy as np

    from discff_cli.render.output import print_json

    print_json({"a": float("nan"), "b": [1.0, float("inf"), np.float32("nan")], "c": 2.5})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"a": None, "b": [1.0, None, None], "c": 2.5}
    assert "NaN" not in out and "3 value(s)" in err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["image", "images", "text", "texts", "label", "answer", "negative_texts", "tag", "x"]),
        children, max_size=5),
    max_leaves=12)


@BOUNDED
@given(lines=st.lists(st.one_of(st.text(max_size=40), JSON_VALUES.map(json.dumps)), min_size=1, max_size=5))
def test_jsonl_readers_fail_only_with_a_numbered_sentence(lines, tmp_path):
    from discff_cli.errors import DiscffError
    from discff_cli.evaluation.items import load_items
    from training.tune.data import read_examples

    path = tmp_path / "prop.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    for read in (lambda: load_items(path, check_images=False), lambda: read_examples(path)):
        try:
            read()
        except DiscffError as exc:
            message = str(exc)
            assert "\n" not in message and (" line " in message or "prop.jsonl" in message), message


@BOUNDED
@given(device=st.text(max_size=12), seed=st.integers(min_value=-2**70, max_value=2**70),
       lse=st.floats(allow_nan=True, allow_infinity=True))
def test_engine_options_fail_as_usage_or_reach_the_model(device, seed, lse, score_args):
    result = run_cli(*score_args, "--device", device, "--seed", str(seed), "--lse-lambda", repr(lse))
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    valid = device.strip() in ("auto", "cpu", "mps", "cuda") or (device.strip().startswith("cuda:") and
                                                                device.strip()[5:].isdigit() and
                                                                len(device.strip()[5:]) <= 3 and
                                                                device.strip()[5:].isascii())
    valid = valid and 0 <= seed < 2**63 and math.isfinite(lse) and 0 < lse <= 1e4
    assert result.exit_code == (1 if valid else 2), (device, seed, lse, result.output)
