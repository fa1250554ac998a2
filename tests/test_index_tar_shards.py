"""Webdataset tar shards as a collection: members read in place, the same search results as the same
images as loose files, damage recorded per member, captions kept, and updates that re-embed only
what changed in the changed shard."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest_index import build, read_index, run_cli, tiny_clip_dir  # noqa: F401

QUERIES = ("a red square", "green", "two blue circles")


def _jpeg(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG" if seed % 2 == 0 else "PNG")
    return buffer.getvalue()


def _name(i: int) -> str:
    """Member names as webdataset writes them: keys with folders, some with dots inside the key."""
    ext = "jpg" if i % 2 == 0 else "png"
    return f"part{i % 3}/sample{i:03d}.v2.{ext}" if i % 4 == 0 else f"part{i % 3}/sample{i:03d}.{ext}"


def _write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def _sample(i: int) -> list[tuple[str, bytes]]:
    stem = _name(i).rsplit(".", 1)[0]
    return [(_name(i), _jpeg(i)), (f"{stem}.txt", f"caption of sample {i}".encode()),
            (f"{stem}.json", json.dumps({"i": i, "source": "test"}).encode()), (f"{stem}.cls", b"3")]


def _collection(root: Path) -> tuple[Path, Path]:
    """(shards folder, loose folder) holding the same 14 readable images.

    Shards 0-2 hold five samples each (image + txt + json + cls); shard 1 also holds a "jpg" that
    is text. Shard 3 is cut short inside its third image: its first two are readable, the rest not.
    """
    shards, loose = root / "shards", root / "loose"
    for s in range(3):
        members = [m for i in range(5 * s, 5 * s + 5) for m in _sample(i)]
        if s == 1:
            members.append(("notes/readme.jpg", b"this is not an image"))
        _write_shard(shards / f"{s:05d}.tar", members[: len(members) - 4 * (s == 2)])  # shard 2: 4 samples
    _write_shard(shards / "00003.tar", [m for i in (14, 15, 16) for m in _sample(i)])
    data = (shards / "00003.tar").read_bytes()
    cut = data.index(_jpeg(16)) + 100  # inside the third image's bytes
    (shards / "00003.tar").write_bytes(data[:cut])
    for i in [*range(14), 14, 15]:
        file = loose / _name(i)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(_jpeg(i))
    return shards, loose


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip_dir):
    root = tmp_path_factory.mktemp("tars")
    shards, loose = _collection(root)
    pattern = str(shards / "{00000..00003}.tar")
    for source, index in ((pattern, "by_pattern"), (loose, "loose")):
        result, summary = build(source, root / index, tiny_clip_dir, "--batch-size", "4")
        assert result.exit_code == 0, result.output
    return root, shards


def _search(index: Path, query: str) -> list[tuple[str, float]]:
    result = run_cli("search", query, "--index", index, "--json", "--top", "20")
    assert result.exit_code == 0, result.output
    return [(r["path"], r["clip_score"]) for r in json.loads(result.stdout)["results"]]


def _member_of(rel: str) -> str:
    return rel.split(".tar/", 1)[1]


def test_shards_index_to_the_same_search_results_as_the_same_images_as_loose_files(built):
    root, shards = built
    for query in QUERIES:
        from_shards = _search(root / "by_pattern", query)
        loose = _search(root / "loose", query)
        assert len(from_shards) == len(loose) == 16
        assert [_member_of(p) for p, _ in from_shards] == [str(Path(p).relative_to(root / "loose")) for p, _ in loose]
        assert np.allclose([s for _, s in from_shards], [s for _, s in loose], atol=1e-4)  # float16 rows, other batches


def test_damage_is_recorded_per_member_and_non_images_are_not_indexed(built):
    root, _ = built
    manifest, items, _ = read_index(root / "by_pattern")
    assert manifest["count"] == 16
    cut = items[f"00003.tar/{_name(16)}"]
    assert cut["status"] == "error" and "cut short" in cut["error"]
    text = items["00001.tar/notes/readme.jpg"]
    assert text["status"] == "error" and "not a recognised image format" in text["error"]
    assert not any(path.endswith((".cls", ".txt", ".json")) for path in items)  # fields of a sample, not images


def test_members_keep_shard_offset_caption_and_json_and_read_in_place(built):
    from index.imageio import image_bytes, open_rgb

    root, shards = built
    _, items, _ = read_index(root / "by_pattern")
    rec = items[f"00000.tar/{_name(4)}"]  # a key with a dot inside
    assert rec["shard"] == "00000.tar" and rec["caption"] == "caption of sample 4"
    assert json.loads(rec["json"]) == {"i": 4, "source": "test"}
    data = (shards / "00000.tar").read_bytes()
    assert data[rec["offset"]:rec["offset"] + rec["size"]] == _jpeg(4)
    from index.search import SearchIndex

    searcher = SearchIndex(root / "by_pattern")
    row = searcher.rel_by_row.index(f"00000.tar/{_name(4)}")
    assert searcher.sidecars([row]) == {row: {"caption": "caption of sample 4", "json": rec["json"]}}
    hit = _search(root / "by_pattern", "green")[0][0]  # an absolute path into a shard, as search prints it
    assert image_bytes(hit) == (root / "loose" / _member_of(hit)).read_bytes()
    assert open_rgb(hit).size == Image.open(root / "loose" / _member_of(hit)).size


def test_a_list_file_and_a_folder_of_shards_name_the_same_collection(built, tiny_clip_dir, tmp_path):
    root, shards = built
    listed = tmp_path / "shards.txt"
    listed.write_text("# my shards\n" + "".join(f"{shards / f'{s:05d}.tar'}\n" for s in range(4)))
    for source in (listed, shards):
        result, summary = build(source, tmp_path / f"idx-{Path(source).name}", tiny_clip_dir)
        assert result.exit_code == 0, result.output
        assert summary["indexed"] == 16 and summary["skipped"] == 2
        got, expected = _search(tmp_path / f"idx-{Path(source).name}", "green"), _search(root / "by_pattern", "green")
        assert [p for p, _ in got] == [p for p, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)


def test_bad_sources_are_one_sentence(tmp_path, tiny_clip_dir):
    for source, words in ((tmp_path / "none-{0..3}.tar", "names no shard that exists"), (tmp_path / "missing", "is not a folder"),
                          ("http://host/{0..1}.tar", "copy them to a local folder")):
        result = run_cli("index", "build", source, "--index", tmp_path / "idx", "--clip", tiny_clip_dir)
        assert result.exit_code != 0 and words in result.output and "Traceback" not in result.output


def test_an_update_after_one_shard_changes_re_embeds_only_it(built, tiny_clip_dir, tmp_path):
    root, original = built
    shards = tmp_path / "shards"
    shutil.copytree(original, shards)
    first, summary = build(shards, tmp_path / "idx", tiny_clip_dir)
    assert first.exit_code == 0 and summary["indexed"] == 16

    # shard 0 unchanged as far as stat can tell (same size and mtime) but its first header zeroed:
    # the update keeps its records without reading its headers again
    stat = (shards / "00000.tar").stat()
    with open(shards / "00000.tar", "r+b") as handle:
        handle.write(bytes(512))
    import os

    os.utime(shards / "00000.tar", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # shard 1 re-packed: one image replaced, one sample added, the rest the same bytes at new offsets
    members = [m for i in range(5, 10) for m in _sample(i)]
    members[0] = (_name(5), _jpeg(105))
    _write_shard(shards / "00001.tar", members + _sample(99))
    (shards / "00002.tar").unlink()  # a vanished shard is dropped
    again, summary = build(shards, tmp_path / "idx", tiny_clip_dir)
    assert again.exit_code == 0, again.output
    assert summary["indexed"] == 2  # the replaced image and the new one: nothing else was embedded
    assert summary["unchanged"] == 16 - 4 - 1 and summary["removed"] == 4
    _, items, _ = read_index(tmp_path / "idx")
    assert not any(p.startswith("00002.tar/") for p in items)
    assert sum(p.startswith("00000.tar/") and r["status"] == "ok" for p, r in items.items()) == 5
    moved = items[f"00001.tar/{_name(6)}"]
    assert (shards / "00001.tar").read_bytes()[moved["offset"]:moved["offset"] + moved["size"]] == _jpeg(6)
    assert items[f"00001.tar/{_name(99)}"]["caption"] == "caption of sample 99"


def test_shards_written_by_webdataset_are_indexed(tmp_path, tiny_clip_dir):
    wds = pytest.importorskip("webdataset")
    shards = tmp_path / "wds"
    shards.mkdir()
    for s in range(2):
        with wds.TarWriter(str(shards / f"train-{s:06d}.tar")) as sink:
            for i in range(3):
                sink.write({"__key__": f"batch{s}/{s * 3 + i:09d}", "jpg": Image.fromarray(
                    np.full((40, 30, 3), 40 * i + s, np.uint8)), "txt": f"a grey picture {s}-{i}",
                    "json": {"width": 30}})
    result, summary = build(str(shards / "train-{000000..000001}.tar"), tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0, result.output
    assert summary["indexed"] == 6 and summary["skipped"] == 0
    _, items, _ = read_index(tmp_path / "idx")
    rec = items["train-000001.tar/batch1/000000004.jpg"]
    assert rec["caption"] == "a grey picture 1-1" and json.loads(rec["json"]) == {"width": 30}


def test_ray_work_is_split_by_shard():
    from index.ray_embed import shard_groups
    from index.scan import FileEntry

    todo = [FileEntry(f"{s}.tar/{i}.jpg", 1, 1, f"{s}.tar", 512 * i) for s, n in ((0, 5), (1, 2)) for i in range(n)]
    todo.append(FileEntry("loose.jpg", 1, 1))
    groups = [json.loads(g["group"]) for g in shard_groups(todo, {}, size=3)]
    assert [[r["rel"] for r in g] for g in groups] == [
        ["0.tar/0.jpg", "0.tar/1.jpg", "0.tar/2.jpg"], ["0.tar/3.jpg", "0.tar/4.jpg"],
        ["1.tar/0.jpg", "1.tar/1.jpg"], ["loose.jpg"]]
    assert [r["i"] for g in groups for r in g] == list(range(8))


def test_the_engine_reads_members_as_it_reads_files(built):
    """`score`, `--rerank` and `--latents` load images through load_pixels and cache them by image_key."""
    import torch

    from discff_cli.engine.preprocess import image_key, load_pixels

    root, shards = built
    member, loose = shards / "00002.tar" / _name(12), root / "loose" / _name(12)
    assert torch.equal(load_pixels(member, 64), load_pixels(loose, 64))
    assert image_key(member) == image_key(loose)
    result = run_cli("score", shards / "00000.tar" / "part9/nothing.jpg", __file__)
    assert result.exit_code != 0 and "Cannot read image" in result.output and "Traceback" not in result.output


def test_the_service_serves_members_and_their_thumbnails(built, tiny_clip_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest_serve import start_service

    root, shards = built
    result, _ = build(str(shards / "{00000..00001}.tar"), tmp_path / "idx", tiny_clip_dir, "--model", "demo")
    assert result.exit_code == 0, result.output
    worker, app = start_service(tmp_path / "idx")
    try:
        client = TestClient(app)
        rows = client.get("/search", params={"q": "green", "top": 3}).json()["results"]
        for row in rows:
            image = client.get(f"/images/{row['id']}")
            assert image.status_code == 200, image.text
            assert image.content == (root / "loose" / _member_of(row["path"])).read_bytes()
            assert image.headers["content-type"] in ("image/jpeg", "image/png")
            thumb = client.get(f"/thumbs/{row['id']}")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    finally:
        worker.stop()


def test_shards_made_by_gnu_tar_from_a_folder_and_compressed_ones(tmp_path, tiny_clip_dir):
    """`tar -cf shard.tar -C dir .` names members `./key.jpg` and adds folder entries; a .tar.gz cannot
    be read by offset and is recorded with what to do."""
    import subprocess

    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("needs GNU tar")
    folder = tmp_path / "sample"
    for i in range(3):
        (folder / "dir").mkdir(parents=True, exist_ok=True)
        (folder / "dir" / f"k{i}.jpg").write_bytes(_jpeg(2 * i))
        (folder / "dir" / f"k{i}.txt").write_text(f"caption {i}")
    shards = tmp_path / "shards"
    shards.mkdir()
    subprocess.run([tar, "-cf", str(shards / "00000.tar"), "-C", str(folder), "."], check=True)
    subprocess.run([tar, "-czf", str(shards / "00001.tar.gz"), "-C", str(folder), "."], check=True)
    result, summary = build(shards, tmp_path / "idx", tiny_clip_dir)
    assert result.exit_code == 0, result.output
    assert summary["indexed"] == 3 and summary["skipped"] == 1
    _, items, _ = read_index(tmp_path / "idx")
    assert items["00000.tar/dir/k1.jpg"]["caption"] == "caption 1"
    assert "decompress it to .tar" in items["00001.tar.gz/"]["error"]


def test_a_damaged_header_ends_the_listing_with_the_byte_it_starts_at(tmp_path):
    from index.scan import scan_folder

    _write_shard(tmp_path / "a.tar", [(f"k{i}.jpg", _jpeg(2 * i)) for i in range(4)])
    data = bytearray((tmp_path / "a.tar").read_bytes())
    third = data.index(_jpeg(4)) - 512  # the third member's header
    data[third + 148:third + 156] = b"garbage!"  # its checksum field
    (tmp_path / "a.tar").write_bytes(bytes(data))
    scan = scan_folder(tmp_path)
    assert [e.rel for e in scan.entries] == ["a.tar/k0.jpg", "a.tar/k1.jpg"]
    assert scan.skipped == [("a.tar/", f"unreadable from byte {third:,} on (not a tar header); "
                                       "the 2 members before it are indexed")]
