"""Decoding photos at the size the model needs: images/s per core, DCT-scaled vs full JPEG decode,
and what it does to the index (recall@10 against a full-decode index of the same photos).

    python benchmarks/decode.py --photos DIR --count 60 --out docs/results/index/decode_dct_60.json

--photos: a folder of real photos (any size; e.g. scikit-image's sample data: astronaut,
coffee, chelsea, motorcycle, rocket, retina, hubble). Each output photo is one of them cropped,
flipped, scaled up to a camera size (2048x1536 to 6000x4000) and given back the high-frequency
detail of a real sensor image (film grain plus a tiled texture photo), then saved as a quality-90
4:2:0 JPEG -- a 12 MP one is 2-4 MB, like a phone's. Measured in one process, one thread.

Rates are images per CPU-second of the one thread (= images/s per core), so a machine shared with
other jobs does not skew them:

  clip    index/dataset.DecodeDataset.__getitem__, exactly what a build's worker runs per image
          (read, hash, decode, EXIF, the CLIP preprocess), --dct on and off
  vae     index.imageio.decode(resize_to=512) + the reranker's resize_center_crop (the VAE input)
  shard   listing a tar shard of the photos (tarfile headers) and reading one member by offset, vs
          webdataset streaming the shard to its last sample (why the index reads tars itself)
  index   two real builds of the photos with the bundled demo CLIP, DCT and full decode: recall@10
          of the DCT index's top 10 against the full-decode index's, over text queries and over
          every photo as a query; and the cosine of each photo's two embeddings
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = ((4032, 3024), (3024, 4032), (2048, 1536), (6000, 4000), (4000, 3000))
QUERIES = ("a cat", "a red motorcycle", "a cup of coffee", "an astronaut", "a rocket on the launch pad",
           "stars in the night sky", "an eye", "a circuit board", "a blue square", "a green circle",
           "grass", "a brick wall", "a person smiling", "two objects side by side", "something red left of blue")


def make_photos(sources: Path, out: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` camera-size JPEGs made from the photos in `sources` (kept between runs)."""
    from PIL import Image, ImageOps

    out.mkdir(parents=True, exist_ok=True)
    bases = [p for p in sorted(sources.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    rgb = [Image.open(p).convert("RGB") for p in bases]
    textures = [im for im, p in zip(rgb, bases) if p.stem in ("grass", "gravel", "brick")] or rgb
    photos = rgb if len(rgb) == len(textures) else [im for im, p in zip(rgb, bases) if p.stem not in
                                                      ("grass", "gravel", "brick")]
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        path = out / f"photo{k:04d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        base = photos[k % len(photos)]
        w, h = base.size
        frac = rng.uniform(0.7, 1.0)
        cw, ch = int(w * frac), int(h * frac)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = base.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        size = SIZES[k % len(SIZES)]
        image = image.resize(size, Image.BICUBIC)
        image = _with_detail(image, textures[k % len(textures)], rng)
        image.save(path, format="JPEG", quality=90)
    return paths


def _with_detail(image, texture, rng) -> "Image.Image":
    """Give an upscaled photo back a sensor image's fine detail: a tiled texture photo and grain."""
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    tile = np.asarray(texture.convert("L"), dtype=np.float32)
    reps = (-(-arr.shape[0] // tile.shape[0]), -(-arr.shape[1] // tile.shape[1]))
    detail = np.tile(tile, reps)[: arr.shape[0], : arr.shape[1]]
    detail = (detail - detail.mean()) * 0.12
    grain = rng.normal(0, 3.0, size=arr.shape[:2]).astype(np.float32)
    arr = arr + (detail + grain)[..., None]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _rates(full, dct, items) -> dict:
    """Images per CPU-second (= per core) of two ways to do the same work, timed image by image in
    alternation. CPU time, not wall time: on a machine shared with other jobs a process gets a
    varying share of a core, while the CPU seconds an image costs stay what they are."""
    for item in items[:2]:
        full(item), dct(item)  # warm the page cache and the code paths
    spent = {"full": 0.0, "dct": 0.0}
    for item in items:
        for mode, fn in (("full", full), ("dct", dct)):
            tick = time.thread_time()
            fn(item)
            spent[mode] += time.thread_time() - tick
    out = {mode: round(len(items) / seconds, 2) for mode, seconds in spent.items()}
    return out | {"speedup": round(spent["full"] / spent["dct"], 2)}


def bench_clip(paths: list[Path], preprocess) -> dict:
    from index.dataset import DecodeDataset
    from index.scan import FileEntry

    root = paths[0].parent
    entries = [FileEntry(p.name, p.stat().st_size, 0) for p in paths]
    full, dct = (DecodeDataset(root, entries, preprocess, 10**9, {}, flag) for flag in (False, True))
    return _rates(full.__getitem__, dct.__getitem__, list(range(len(entries))))


def bench_vae(paths: list[Path], size: int = 512) -> dict:
    from discff_cli.engine.preprocess import resize_center_crop
    from index.imageio import decode

    def run(dct: bool):
        return lambda p: resize_center_crop(decode(p, 10**9, size, dct).image, size)

    out = _rates(run(False), run(True), paths)
    diffs = [np.abs(np.asarray(run(False)(p), np.float32) - np.asarray(run(True)(p), np.float32)).mean()
             for p in paths[:8]]
    out["mean_abs_pixel_difference_0_255"] = round(float(np.mean(diffs)), 2)
    return out


def bench_shard(paths: list[Path], work: Path) -> dict:
    from index.tars import list_members, read_range

    shard = work / "photos.tar"
    with tarfile.open(shard, "w") as tar:
        for p in paths:
            tar.add(p, arcname=p.name)
            data = f"caption of {p.stem}".encode()
            info = tarfile.TarInfo(p.stem + ".txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    start = time.perf_counter()
    listing = list_members(shard)
    listed = time.perf_counter() - start
    last = listing.members[paths[-1].name]
    start = time.perf_counter()
    read_range(shard, last.offset, last.size)
    read = time.perf_counter() - start
    out = {"members": len(listing.members), "shard_bytes": shard.stat().st_size, "list_ms": round(listed * 1e3, 2),
           "read_last_member_ms": round(read * 1e3, 3)}
    try:
        import webdataset as wds
    except ImportError:
        return out
    start = time.perf_counter()
    for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
        pass
    out["webdataset_stream_to_last_ms"] = round((time.perf_counter() - start) * 1e3, 2)
    return out


def bench_index(paths: list[Path], work: Path) -> dict:
    from discff_cli.clip_resolve import resolve_clip
    from index.builder import BuildOptions, build_index
    from index.clip_model import load_clip
    from index.search import SearchIndex

    clip = load_clip(resolve_clip("demo"), device="cpu")
    embeddings, searchers, seconds = {}, {}, {}
    for mode, dct in (("full", False), ("dct", True)):
        opts = BuildOptions(root=paths[0].parent, index_dir=work / f"idx-{mode}", clip_spec="demo", dct=dct,
                            rebuild=True, workers=0, index_type="flat")
        start = time.perf_counter()
        build_index(opts, clip)
        seconds[mode] = round(time.perf_counter() - start, 1)
        searchers[mode] = SearchIndex(work / f"idx-{mode}")
        embeddings[mode] = np.asarray(searchers[mode].embeddings).astype(np.float32)
    cos = (embeddings["full"] * embeddings["dct"]).sum(1) / (
        np.linalg.norm(embeddings["full"], axis=1) * np.linalg.norm(embeddings["dct"], axis=1))
    texts = clip.embed_texts(list(QUERIES))
    out = {"photos": len(paths), "build_seconds": seconds,
           "recall_at_10_text_queries": _overlap(searchers, texts),
           "recall_at_10_photo_queries": _overlap(searchers, embeddings["full"]),
           "embedding_cosine_min": round(float(cos.min()), 4), "embedding_cosine_mean": round(float(cos.mean()), 4)}
    return out


def _overlap(searchers: dict, queries: np.ndarray, k: int = 10) -> float:
    full = searchers["full"].search_vectors(queries, k)
    dct = searchers["dct"].search_vectors(queries, k)
    shared = [len({h.rel for h in a} & {h.rel for h in b}) / k for a, b in zip(full, dct)]
    return round(float(np.mean(shared)), 4)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True, help="folder of source photos")
    p.add_argument("--count", type=int, default=120)
    p.add_argument("--work", type=Path, default=Path("/tmp/discff-decode-bench"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--skip-index", action="store_true", help="only the per-core rates and the shard figures")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # per core
    paths = make_photos(args.photos, args.work / "photos", args.count)
    from discff_cli.clip_resolve import resolve_clip
    from index.clip_model import load_clip

    preprocess = load_clip(resolve_clip("demo"), device="cpu").preprocess
    result = {"command": "python benchmarks/decode.py " + " ".join(sys.argv[1:]), "machine": "2-core CPU shared with other jobs (load 8-10), one thread; rates per CPU-second",
              "photo_sizes": [list(s) for s in SIZES],
              "photo_mb_mean": round(float(np.mean([q.stat().st_size for q in paths])) / 2**20, 2),
              "clip_images_per_s": bench_clip(paths, preprocess), "vae_512_images_per_s": bench_vae(paths),
              "shard": bench_shard(paths, args.work)}
    if not args.skip_index:
        result["index"] = bench_index(paths, args.work)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
