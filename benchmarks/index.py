"""Index benchmark: build throughput (decode and embed separately) and search latency per index type.

    python benchmarks/index.py                                   # tiny random CLIP on CPU, 10k and 100k vectors
    python benchmarks/index.py --sizes 10000,100000,1000000 --dim 512
    python benchmarks/index.py --skip-search --arch ViT-H-14 --device cuda --images 2048 --batch-size 128
    python benchmarks/index.py --skip-search --ray --workers 2     # also `index build --ray local` (needs the ray extra)
    python benchmarks/index.py --skip-build --skip-search --mmap-shards 10000000 --dim 512 --work /var/tmp/b10m

Build part: `--images` synthetic 512x384 JPEGs are written to a temp folder, then timed three ways:
  decode   DataLoader workers decoding through index.imageio.open_rgb + the CLIP preprocess (no model)
  embed    the CLIP forward pass alone on already-preprocessed batches (fp16 autocast on CUDA)
  build    `index build` end to end (scan, hash, decode, embed, chunks, FAISS, manifest)
  ray      with --ray: the same build with Ray Data embedding (`index build --ray local --workers W`):
           end to end (Ray start and actor start-up included) and images per second of summed decode
           + embed busy time in the Ray workers (the rate that scales with the number of workers)
The CLIP is the tiny random test model (`--arch tiny`) or an open_clip architecture with random
weights (`--arch ViT-H-14`: same cost as the real weights, no download).

Search part: synthetic clustered unit vectors (a mixture of `--clusters` Gaussian blobs, like real
embeddings, which are far from uniform) at each size; every index type is built and tuned as
`index build` does (its knob raised until recall@10 >= 0.98 on a sample), then timed one query at a
time as `discff search` runs it: p50/p99 latency over `--queries` held-out queries and recall@10
against exact search on them. Prints one table; `--json FILE` also writes the figures.

Larger than memory (`--mmap-shards N`): the same clustered vectors, N of them, written block by
block as the float16 embedding shards an index keeps (index/shards.py; 10M x 512 is 10 GB), then
the index's own code paths: FAISS trained on a sample and filled shard by shard with the recall
tuning of `index build` (faiss_index.build_tuned over the shards), written, and opened memory-mapped
in a fresh process that searches one query at a time with the exact refine read from the shards.
Reports the peak resident set (VmHWM) of the build process and of the search process, recall@10
against exact search over all N (streamed) and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tiny", help="tiny | an open_clip architecture with random weights (ViT-H-14)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--embed-batches", type=int, default=None, help="batches timed for embed (default: all images)")
    p.add_argument("--sizes", default="10000,100000", help="vector counts for the search part")
    p.add_argument("--dim", type=int, default=1024, help="vector dimension (ViT-H-14: 1024)")
    p.add_argument("--types", default="flat,hnsw,ivf_flat,ivf_pq")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--torch-threads", type=int, default=None, help="intra-op threads of torch (default: torch')")
    p.add_argument("--faiss-threads", type=int, default=None, help="OpenMP threads of faiss (default: faiss')")
    p.add_argument("--ray", action="store_true", help="also time `index build --ray local` (--arch tiny only)")
    p.add_argument("--mmap-shards", type=int, default=0, metavar="N",
                   help="larger-than-memory run: N vectors as float16 shards on disk, IVF-PQ built and searched "
                        "memory-mapped, peak RSS reported (N=10000000 --dim 512: 10 GB of shards)")
    p.add_argument("--max-memory", default="8G", help="as `index build --max-memory`: picks the index type")
    p.add_argument("--work", default=None, help="folder for --mmap-shards data (default: a temp folder); kept")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--json", dest="json_path", default=None)
    return p.parse_args(argv)


# ---------------------------------------------------------------- build throughput


def make_clip(arch: str, device: str):
    """The CLIP under test, loaded through load_clip (tiny) or built with random weights (real architectures)."""
    from index.clip_model import ClipModel, load_clip, weights_fingerprint

    if arch == "tiny":
        from index.tiny_clip import build_tiny_clip

        source = build_tiny_clip(Path(tempfile.mkdtemp(prefix="tiny-clip-")) / "clip")
        clip = load_clip(source, device)
        clip.source = str(source)  # what a Ray actor loads
        return clip
    import open_clip
    import torch

    with torch.device(device):  # random init directly on the GPU: seconds instead of a minute for ViT-H
        model = open_clip.create_model(arch, pretrained=None, device=device)
    model.eval()
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    dim = model.text_projection.shape[1] if hasattr(model, "text_projection") else model.visual.output_dim
    return ClipModel(model, preprocess, open_clip.get_tokenizer(arch), arch + " (random)",
                     weights_fingerprint({}), int(dim), device)


def write_images(folder: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
    for i in range(count):
        arr = np.roll(base, i * 7, axis=1)
        arr[: 8 + i % 50] = (i * 37) % 256
        Image.fromarray(arr).save(folder / f"img{i:06d}.jpg", quality=90)


def bench_build(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from index.builder import BuildOptions, build_index
    from index.dataset import DecodeDataset, make_loader
    from index.imageio import DEFAULT_MAX_PIXELS
    from index.scan import FileEntry

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    clip = make_clip(args.arch, args.device)
    work = Path(tempfile.mkdtemp(prefix="discff-bench-"))
    folder = work / "images"
    write_images(folder, args.images)
    rels = sorted(p.name for p in folder.iterdir())

    entries = [FileEntry(rel, (folder / rel).stat().st_size, 0) for rel in rels]
    dataset = DecodeDataset(folder, entries, clip.preprocess, DEFAULT_MAX_PIXELS, {})
    tick = time.perf_counter()
    batches = [pixels for pixels, _ in make_loader(dataset, args.batch_size, args.workers)]
    decode_s = time.perf_counter() - tick

    n_batches = args.embed_batches or len(batches)
    pool = [batches[i % len(batches)] for i in range(n_batches)]
    clip.embed_pixels(pool[0])  # warm-up (CUDA context, kernels)
    if clip.device.startswith("cuda"):
        torch.cuda.synchronize()
    tick = time.perf_counter()
    for pixels in pool:
        clip.embed_pixels(pixels)  # returns numpy, so each call is synchronised
    embed_s = time.perf_counter() - tick
    embedded = sum(len(p) for p in pool)

    opts = BuildOptions(root=folder, index_dir=work / "idx", clip_spec=args.arch, batch_size=args.batch_size,
                        workers=args.workers)
    try:
        summary = build_index(opts, clip)
        build_rate, build_s = summary.indexed / summary.seconds, summary.seconds
    except ImportError as exc:  # e.g. a bare GPU box without pyarrow: decode/embed figures still stand
        print(f"  (end-to-end build skipped: {exc})")
        build_rate = build_s = float("nan")
    ray_figures = bench_ray(args, clip, folder, work) if args.ray else {}
    return {
        **ray_figures,
        "arch": args.arch, "device": clip.device, "dim": clip.dim, "images": len(rels), "batch_size": args.batch_size,
        "workers": args.workers, "image_size": "512x384 jpeg",
        "decode_images_per_s": len(rels) / decode_s,
        "embed_images_per_s": embedded / embed_s,
        "build_images_per_s": build_rate,
        "build_seconds": build_s,
        "gpu_name": torch.cuda.get_device_name() if clip.device.startswith("cuda") else None,
    }


def bench_ray(args: argparse.Namespace, clip, folder: Path, work: Path) -> dict[str, Any]:
    """`index build --ray local` of the same folder: end-to-end and per-actor images/s."""
    from index.builder import BuildOptions, build_index
    from index.ray_embed import RayEmbedder

    if not hasattr(clip, "source"):
        raise SystemExit("--ray times a CLIP the actors can load: use --arch tiny (random-weight architectures "
                         "exist only in this process).")
    embedder = RayEmbedder("local", args.workers, clip.source, clip.preprocess, args.device,
                           {"num_cpus": os.cpu_count() or 1})
    opts = BuildOptions(root=folder, index_dir=work / "idx-ray", clip_spec=args.arch, batch_size=args.batch_size,
                        workers=args.workers, embedder=embedder)
    summary = build_index(opts, clip)
    busy = summary.decode_seconds + summary.embed_seconds
    return {"ray_workers": args.workers, "ray_build_images_per_s": summary.indexed / summary.seconds,
            "ray_build_seconds": summary.seconds, "ray_images_per_busy_s": summary.indexed / busy}


# ---------------------------------------------------------------- search latency


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, block_seed: int | None = None) -> np.ndarray:
    """Unit vectors drawn around `clusters` random centres (spread ~ like same-topic CLIP embeddings).
    `block_seed` draws another block around the same centres (for data written block by block)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if block_seed is not None:
        rng = np.random.default_rng([seed, block_seed])
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        x = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, dim)).astype(np.float32) * (0.8 / dim**0.5)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_search(args: argparse.Namespace) -> list[dict[str, Any]]:
    import faiss

    from index import faiss_index as fi

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        x = clustered_vectors(n, args.dim, args.clusters, seed=0).astype(np.float16).astype(np.float32)
        q = clustered_vectors(args.queries, args.dim, args.clusters, seed=0)  # same centres, fresh noise
        q = q + np.random.default_rng(1).standard_normal(q.shape).astype(np.float32) * (0.5 / args.dim**0.5)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        truth = fi.exact_topk(x, q, 10)
        for kind in args.types.split(","):
            built = fi.build_tuned(x, kind)
            lat = []
            found = []
            for query in q:
                tick = time.perf_counter()
                _, ids = fi.search(built.index, kind, built.params, query[None], 10, x)
                lat.append((time.perf_counter() - tick) * 1000)
                found.append(ids[0])
            row = {"n": n, "dim": args.dim, "type": kind, "params": built.params,
                   "build_s": round(built.build_seconds, 2), "p50_ms": float(np.percentile(lat, 50)),
                   "p99_ms": float(np.percentile(lat, 99)), "recall_at_10": fi.recall_at_k(np.array(found), truth),
                   "tuned_recall_at_10": built.recall_at_10}
            rows.append(row)
            print(f"  n={n:>9,} {kind:<8} build {row['build_s']:7.1f}s  p50 {row['p50_ms']:8.3f} ms  "
                  f"p99 {row['p99_ms']:8.3f} ms  recall@10 {row['recall_at_10']:.3f}  {built.params}", flush=True)
            del built
    return rows


# ---------------------------------------------------------------- larger than memory


def peak_rss_gib() -> float:
    """VmHWM of this process: the peak resident set, file-backed pages included."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / (1 << 20)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def write_sharded(work: Path, n: int, dim: int, clusters: int) -> list[Path]:
    """N clustered unit vectors as index shards, 100k rows at a time (never all in memory)."""
    from index.shards import ShardWriter, shard_count, shard_names

    paths = [work / name for name in shard_names("embeddings-1", shard_count(n))]
    if all(p.is_file() for p in paths) and (work / "vectors.done").is_file():
        return paths  # a rerun reuses the data
    writer = ShardWriter(paths, n, dim)
    step = 100_000
    for block_no, start in enumerate(range(0, n, step)):
        writer.write(clustered_vectors(min(step, n - start), dim, clusters, seed=0, block_seed=block_no + 1))
    writer.close()
    (work / "vectors.done").write_text(str(n))
    return paths


def bench_sharded(args: argparse.Namespace) -> dict[str, Any]:
    """Build over shards in this process, search in a fresh one; both peaks reported."""
    import multiprocessing

    import faiss

    from index import faiss_index as fi
    from index.shards import Shards

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="discff-shards-"))
    work.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    paths = write_sharded(work, args.mmap_shards, args.dim, args.clusters)
    write_s = time.perf_counter() - tick
    emb = Shards(paths)
    kind = fi.choose_index_type(len(emb), args.dim, fi.parse_memory(args.max_memory))
    built = fi.build_tuned(emb, kind)
    tick = time.perf_counter()
    fi.write(built.index, work / "faiss-1.index")
    figures = {"n": len(emb), "dim": args.dim, "type": kind, "params": built.params, "write_vectors_s": write_s,
               "build_s": built.build_seconds, "tuning": built.tuning, "tuned_recall_at_10": built.recall_at_10,
               "shards": len(paths), "shard_bytes": sum(p.stat().st_size for p in paths),
               "faiss_bytes": (work / "faiss-1.index").stat().st_size, "build_peak_rss_gib": peak_rss_gib()}
    del built
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        figures.update(pool.apply(search_sharded, ([str(p) for p in paths], str(work / "faiss-1.index"), kind,
                                                   figures["params"], args.queries, args.clusters,
                                                   args.faiss_threads)))
    return figures


def search_sharded(paths: list[str], faiss_path: str, kind: str, params: dict, count: int, clusters: int,
                   threads: int | None) -> dict[str, Any]:
    """In a fresh process: open the index memory-mapped, time held-out queries, recall against exact."""
    import faiss

    from index import faiss_index as fi
    from index.shards import Shards

    if threads:
        faiss.omp_set_num_threads(threads)
    tick = time.perf_counter()
    emb = Shards([Path(p) for p in paths])
    index = fi.read(faiss_path, kind, params)
    open_s = time.perf_counter() - tick
    rss_open = peak_rss_gib()
    q = held_out_queries(count, emb.shape[1], clusters)
    lat, found = [], []
    for query in q:
        tick = time.perf_counter()
        _, ids = fi.search(index, kind, params, query[None], 10, emb)
        lat.append((time.perf_counter() - tick) * 1000)
        found.append(ids[0])
    search_rss = peak_rss_gib()
    tick = time.perf_counter()
    truth = fi.exact_topk(emb, q, 10)  # streamed over every shard
    return {"open_s": open_s, "open_peak_rss_gib": rss_open, "search_peak_rss_gib": search_rss,
            "exact_s": time.perf_counter() - tick, "exact_peak_rss_gib": peak_rss_gib(),
            "queries": len(q), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "recall_at_10": fi.recall_at_k(np.array(found), truth)}


def held_out_queries(count: int, dim: int, clusters: int) -> np.ndarray:
    """Queries near the clusters (same centres, fresh noise), none of them an indexed vector."""
    q = clustered_vectors(count, dim, clusters, seed=0)
    q = q + np.random.default_rng(1).standard_normal(q.shape).astype(np.float32) * (0.5 / dim**0.5)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def print_sharded(f: dict[str, Any]) -> None:
    print(f"larger than memory: {f['n']:,} x {f['dim']} float16 in {f['shards']} shards "
          f"({f['shard_bytes'] / 2**30:.1f} GiB on disk, written in {f['write_vectors_s']:.0f}s)")
    print(f"  {f['type']} {f['params']}: built and tuned in {f['build_s']:.0f}s, index file "
          f"{f['faiss_bytes'] / 2**30:.2f} GiB, build peak RSS {f['build_peak_rss_gib']:.2f} GiB")
    print(f"  search (fresh process, memory-mapped): open {f['open_s']:.2f}s, p50 {f['p50_ms']:.2f} ms, "
          f"p99 {f['p99_ms']:.2f} ms over {f['queries']} queries, recall@10 {f['recall_at_10']:.3f} against exact "
          f"search of all {f['n']:,}; peak RSS after searching {f['search_peak_rss_gib']:.2f} GiB "
          f"(after the exact check too: {f['exact_peak_rss_gib']:.2f} GiB)", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if not args.skip_build:
        b = bench_build(args)
        figures["build"] = b
        print(f"build ({b['arch']}, {b['device']}{', ' + b['gpu_name'] if b['gpu_name'] else ''}, "
              f"{b['images']} images {b['image_size']}, batch {b['batch_size']}, {b['workers']} workers):")
        print(f"  decode {b['decode_images_per_s']:9.1f} images/s   embed {b['embed_images_per_s']:9.1f} images/s   "
              f"index build end to end {b['build_images_per_s']:9.1f} images/s", flush=True)
        if args.ray:
            print(f"  index build --ray local ({b['ray_workers']} actors) end to end {b['ray_build_images_per_s']:9.1f} "
                  f"images/s ({b['ray_build_seconds']:.1f}s, Ray start included)   "
                  f"{b['ray_images_per_busy_s']:9.1f} images per second of decode + embed busy time", flush=True)
    if args.mmap_shards:
        figures["sharded"] = bench_sharded(args)
        print_sharded(figures["sharded"])
    if not args.skip_search:
        print(f"search (one query at a time, k=10, dim {args.dim}, clustered synthetic vectors):", flush=True)
        figures["search"] = bench_search(args)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
