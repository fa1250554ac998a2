"""A damaged index is named in one sentence by every reader, listed by `index check`, and repaired by a
plain `index build` that reuses every embedding still intact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest_index import build, built_folder, read_index, run_cli, tiny_clip_dir, write_images  # noqa: F401


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_clip_dir):
    return built_folder(tmp_path_factory.mktemp("damage"), tiny_clip_dir, 12, 4)


@pytest.fixture()
def index(pristine, tmp_path):
    """A fresh copy of the pristine index (same image folder) for one kind of damage."""
    shutil.copytree(pristine / "idx", tmp_path / "idx")
    return tmp_path / "idx"


def _data_file(index_dir: Path, key: str) -> Path:
    return index_dir / json.loads((index_dir / "manifest.json").read_text())["files"][key]


def _one_sentence(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _search_ok(index_dir: Path) -> list[str]:
    result = run_cli("search", "a red square", "--index", index_dir, "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    return [r["path"] for r in json.loads(result.stdout)["results"]]


def _data_file_of_backup(index_dir: Path, key: str) -> Path:
    return index_dir / json.loads((index_dir / "manifest.backup.json").read_text())["files"][key]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


DAMAGE = {
    # name: (damage, file named in the message, embeddings reusable by the repair)
    # the copy of the last manifest names the generation and its checksums: its files are reused once they verify
    "manifest binary": (lambda d: (d / "manifest.json").write_bytes(b"\x00\xff\xfe garbage \x89"), "manifest", True),
    "manifest array": (lambda d: (d / "manifest.json").write_text("[1, 2, 3]"), "manifest", True),
    "manifest misses keys": (lambda d: (d / "manifest.json").write_text(json.dumps(
        {k: v for k, v in json.loads((d / "manifest.json").read_text()).items() if k != "files"})), "manifest", True),
    "manifest and its copy garbage": (lambda d: [(d / n).write_text("{") for n in ("manifest.json",
                                                                               "manifest.backup.json")],
                                      "manifest", False),
    "manifest garbage, a data file damaged": (lambda d: ((d / "manifest.json").write_text("{"),
                                                         _truncate(_data_file_of_backup(d, "embeddings"))),
                                              "manifest", False),
    "items truncated": (lambda d: _truncate(_data_file(d, "items")), "items-", False),
    "items deleted": (lambda d: _data_file(d, "items").unlink(), "items-", False),
    "embeddings truncated": (lambda d: _truncate(_data_file(d, "embeddings")), "embeddings-", False),
    "faiss truncated": (lambda d: _truncate(_data_file(d, "faiss")), "faiss-", True),
    "faiss zeroed": (lambda d: _zero(_data_file(d, "faiss")), "faiss-", True),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_named_checked_and_repaired_by_a_plain_build(case, index, pristine, tiny_clip_dir):
    damage, named, reusable = DAMAGE[case]
    before = _search_ok(index)
    damage(index)

    searched = run_cli("search", "a red square", "--index", index)
    assert named in _one_sentence(searched) and "damaged" in searched.stderr

    checked = run_cli("index", "check", "--index", index, "--json")
    assert checked.exit_code == 1 and "Traceback" not in checked.output
    problems = json.loads(checked.stdout)["problems"]
    assert problems and any(named in p["file"] for p in problems)

    repaired, summary = build(pristine / "images", index, tiny_clip_dir)  # no --rebuild
    assert repaired.exit_code == 0, repaired.output
    # a FAISS file damaged in place (same size) is not hashed by a build, which rebuilds it anyway
    assert summary["repaired"] or case == "faiss zeroed"
    assert summary["indexed"] == (0 if reusable else 12) and summary["unchanged"] == (12 if reusable else 0)
    assert _search_ok(index) == before
    assert run_cli("index", "check", "--index", index).exit_code == 0


def test_damage_in_place_is_found_by_checksum_and_repaired(index, pristine, tiny_clip_dir):
    emb_path = _data_file(index, "embeddings")
    data = bytearray(emb_path.read_bytes())
    data[-8:] = b"\x00\x7c" * 4  # same size, other vectors (float16 inf)
    emb_path.write_bytes(bytes(data))
    checked = run_cli("index", "check", "--index", index)
    assert checked.exit_code == 1 and "checksum" in checked.output
    _, summary = build(pristine / "images", index, tiny_clip_dir)
    assert summary["indexed"] == 12 and np.isfinite(read_index(index)[2].astype(np.float32)).all()


def test_intact_index_checks_clean(index):
    result = run_cli("index", "check", "--index", index, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["problems"] == [] and doc["count"] == 12 and len(doc["files"]) == 3


GARBAGE = {
    "session garbage": lambda p: (p / "session.json").write_bytes(b"\xff\x00not json"),
    "chunk garbage": lambda p: (p / "chunk-00000000.json").write_bytes(b"{\"first_row\": \x00" + bytes(100)),
    "chunk cut half-way": lambda p: _truncate(p / "chunk-00000000.json"),
    "chunk with a bad name": lambda p: (p / "chunk-xyz.json").write_bytes(b"junk"),
    "vector spool cut half-way": lambda p: _truncate(p / "spool.f16"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_in_resume_files_is_discarded_and_redone(case, index, pristine, tiny_clip_dir, tmp_path):
    folder = tmp_path / "more"
    shutil.copytree(pristine / "images", folder)
    write_images(folder / "new", 8, seed=11)
    before = _search_ok(index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["root"] = str(folder.resolve())
    (index / "manifest.json").write_text(json.dumps(manifest))
    killed, _ = build(folder, index, tiny_clip_dir, "--batch-size", "2",
                      env={"DISCFF_INDEX_FAIL_AFTER_BATCHES": "2"})
    assert killed.exit_code != 0
    assert len(before) == 3  # the previous generation answered and still does
    assert len(_search_ok(index)) == 3
    GARBAGE[case](index / "pending")

    resumed, summary = build(folder, index, tiny_clip_dir, "--batch-size", "2")
    assert resumed.exit_code == 0, resumed.output
    assert summary["indexed"] == 8 and summary["unchanged"] == 12 and summary["skipped"] == 0
    assert not (index / "pending").exists()
    assert read_index(index)[0]["count"] == 20


def test_damaged_latent_store_is_treated_as_absent(tmp_path, tiny_sd_dir):
    from PIL import Image

    from discff_cli.engine import latent_store
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import load_scorer

    scorer = load_scorer(str(tiny_sd_dir), EngineConfig(steps=1, levels=(0.5,), device="cpu"))
    images = []
    for i in range(3):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), (90 * i, 30, 60)).save(images[-1])
    assert latent_store.update_latent_store(tmp_path, scorer, images)["encoded"] == 3
    for damage in (lambda: (tmp_path / "latents.json").write_bytes(b"\xff[[["),
                   lambda: _truncate(tmp_path / "latents.npy"),
                   lambda: (tmp_path / "latents.json").write_text('{"keys": 5}')):
        damage()
        assert latent_store.seed_from_store(scorer, tmp_path, images) == 0
        assert latent_store.update_latent_store(tmp_path, scorer, images)["encoded"] == 3  # redone
        assert latent_store.seed_from_store(scorer, tmp_path, images) == 3
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_build_latents_over_a_damaged_latent_store_redoes_it(tmp_path, tiny_sd_dir):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 40, 200 - 60 * i)).save(tmp_path / "imgs" / f"{i}.png")
    args = ["index", "build", tmp_path / "imgs", "--index", tmp_path / "idx", "--clip", "demo",
            "--model", tiny_sd_dir, "--device", "cpu", "--latents"]
    assert run_cli(*args).exit_code == 0
    (tmp_path / "idx" / "latents.json").write_bytes(b"\x00garbage")
    _truncate(tmp_path / "idx" / "latents.npy")
    again = run_cli(*args)
    assert again.exit_code == 0 and "Traceback" not in again.output
    assert "latents: encoded 3, reused 0" in again.stderr
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.endswith(".tmp")]
