"""Full disks, read-only file systems and missing permissions (faked with OSError where a real one cannot be
made: the tests may run as root): one sentence naming the path, checked before any model loads where it can
be, the previous generation still searchable and no temporary files left."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from conftest_index import build, built_folder, run_cli, tiny_clip_dir, write_images  # noqa: F401
from conftest_tune import FAST_CLI, colour_pairs, one_thread  # noqa: F401


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_clip_dir):
    return built_folder(tmp_path_factory.mktemp("writes"), tiny_clip_dir, 8, 6)


@pytest.fixture()
def index(pristine, tmp_path):
    shutil.copytree(pristine / "idx", tmp_path / "idx")
    shutil.copytree(pristine / "images", tmp_path / "images")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    manifest["root"] = str((tmp_path / "images").resolve())
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    write_images(tmp_path / "images" / "new", 3, seed=8)  # work for the next build
    return tmp_path / "idx"


def _one_sentence(result, *fragments: str) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _searchable(index_dir) -> int:
    result = run_cli("search", "green", "--index", index_dir, "--json")
    assert result.exit_code == 0, result.output
    return len(json.loads(result.stdout)["results"])


def _leftovers(index_dir) -> list[str]:
    names = [p.name for p in index_dir.iterdir()]
    return [n for n in names if n.endswith(".tmp") or n.startswith(("items-2", "embeddings-2", "faiss-2"))]


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args and isinstance(args[0], (str, os.PathLike))
                      else None)
    return fail


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                                         (errno.ENOSPC, "disk is full")])
def test_unwritable_index_is_refused_before_the_clip_loads(code, words, index, tiny_clip_dir, monkeypatch):
    monkeypatch.setattr("index.fs.mkstemp", _raise(code))
    monkeypatch.setattr("index.clip_model.load_clip", lambda *a, **k: pytest.fail("the CLIP loaded first"))
    result, _ = build(index.parent / "images", index, tiny_clip_dir)
    _one_sentence(result, str(index), words)
    monkeypatch.undo()
    assert _searchable(index) == 8 and not _leftovers(index)


def test_full_disk_while_publishing_leaves_the_old_generation_and_no_temp_files(index, tiny_clip_dir, monkeypatch):
    def write_half(path, offset, data):
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("index.shards._write_at", write_half)
    result, _ = build(index.parent / "images", index, tiny_clip_dir)
    _one_sentence(result, "Cannot write", str(index), "disk is full", "previous index is unchanged")
    assert not _leftovers(index)
    monkeypatch.undo()
    assert _searchable(index) == 8
    resumed, summary = build(index.parent / "images", index, tiny_clip_dir)  # the embedded batches were kept
    assert resumed.exit_code == 0 and summary["resumed"] == 3 and _searchable(index) == 10


def test_full_disk_while_embedding_keeps_the_old_generation(index, tiny_clip_dir, monkeypatch):
    monkeypatch.setattr("index.pending.atomic_write_bytes", _raise(errno.ENOSPC))  # a resume chunk
    result, _ = build(index.parent / "images", index, tiny_clip_dir)
    _one_sentence(result, "disk is full")
    monkeypatch.undo()
    assert _searchable(index) == 8 and not _leftovers(index)


def test_tune_refuses_an_unwritable_out_before_the_model_loads(colour_pairs, tmp_path, monkeypatch):
    monkeypatch.setattr("index.fs.mkstemp", _raise(errno.EROFS))
    monkeypatch.setattr("discff_cli.engine.scorer.load_scorer", lambda *a, **k: pytest.fail("model loaded first"))
    result = run_cli("tune", colour_pairs, "--model", "demo", "--out", tmp_path / "ro" / "d.safetensors", *FAST_CLI)
    _one_sentence(result, str(tmp_path / "ro"), "read-only")


def test_tune_full_disk_at_the_end_is_one_sentence_and_leaves_no_temp(colour_pairs, tmp_path, monkeypatch,
                                                                       one_thread):  # noqa: F811
    import diffusers.models.modeling_utils  # noqa: F401 - these bind safetensors' save_file when imported:
    import transformers.modeling_utils  # noqa: F401 - import them before it is patched, never during

    def save_half(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr("safetensors.torch.save_file", save_half)
    out = tmp_path / "out" / "d.safetensors"
    result = run_cli("tune", colour_pairs, "--model", "demo", "--out", out, "--epochs", "1", *FAST_CLI)
    _one_sentence(result, "disk is full", "--resume")
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_demo_into_a_read_only_folder_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr("index.fs.mkstemp", _raise(errno.EROFS))
    result = run_cli("demo", tmp_path / "demo", "--images", "10", "--queries", "1", "--device", "cpu")
    _one_sentence(result, str(tmp_path / "demo"), "read-only")
