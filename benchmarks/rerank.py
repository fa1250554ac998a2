"""Rerank benchmark: N candidates for one query, naive reference vs the engine, in one run.

    python benchmarks/rerank.py --model demo
    python benchmarks/rerank.py --model sd21-random --sample-size 16 --steps 2 --levels 0.5
    python benchmarks/rerank.py --model sd21-random --sample-size 64 --dtype bfloat16 --device cuda \
        --naive-candidates 4

Both sides score the same candidates on the same grid with the same seed; the benchmark asserts
their scores agree and prints the max abs difference. Timings are end to end from cold caches
(image decode, VAE, text encoder, U-Net). `--naive-candidates K` times the naive side on the
first K candidates only and scales its time by N/K (its cost per pair does not depend on N);
the score check then covers those K. The last line is `speedup: X.XX` (engine over naive).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAKS_TFLOPS = {  # dense, no sparsity, from the vendors' datasheets
    ("H100", "bfloat16"): 989.0, ("H100", "float16"): 989.0, ("H100", "float32"): 67.0,
    ("H200", "bfloat16"): 989.0, ("H200", "float16"): 989.0, ("H200", "float32"): 67.0,
    ("A100", "bfloat16"): 312.0, ("A100", "float16"): 312.0, ("A100", "float32"): 19.5,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", help="demo | a diffusers directory | sd21-random")
    p.add_argument("--sample-size", type=int, default=None, help="latent size of sd21-random (64 = 512x512)")
    p.add_argument("--resolution", type=int, default=None, help="pixel size of sd21-random (8 x sample size)")
    p.add_argument("--keep-model", default=None, help="build sd21-random here (reused if it exists)")
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--naive-candidates", type=int, default=None, help="time naive on the first K only (scaled)")
    p.add_argument("--score", default="denoise", choices=["attention", "denoise", "discffusion"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--levels", default="0.2,0.4,0.6,0.8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=0, help="engine U-Net items per call; 0 = auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--skip-naive", action="store_true", help="engine only (no speedup line)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the figures to this file")
    return p.parse_args(argv)


def build_sd21_random(args: argparse.Namespace) -> str:
    """An SD-2.1-base-shaped random-weight model in diffusers format (temp dir unless --keep-model)."""
    from training.demo_models.sd_configs import build_random_sd, sd21_configs

    sample = args.sample_size or (args.resolution // 8 if args.resolution else 16)
    out = Path(args.keep_model) if args.keep_model else Path(tempfile.mkdtemp(prefix="sd21-random-"))
    if not (out / "model_index.json").exists():
        t0 = time.perf_counter()
        build_random_sd(out, sd21_configs("full", sample_size=sample), seed=0)
        print(f"built sd21-random (sample size {sample}) in {time.perf_counter() - t0:.1f} s at {out}", flush=True)
    return str(out)


def candidates(n: int) -> tuple[list[Any], str]:
    """N demo-world test images and one query caption (the first image's true caption)."""
    from training import world

    examples = world.make_split("test", n, seed=0)
    return [ex.image for ex in examples], examples[0].caption


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: Any) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - t0


def unet_flops_per_item(scorer: Any) -> int:
    """FLOPs of one U-Net item as the engine runs it (its processors), counted once."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shape = scorer.latent_shape
    sample = torch.zeros((1, *shape), device=scorer.device, dtype=scorer.dtype)
    context = scorer.encode_texts(["a red circle"])[0].to(scorer.device, scorer.dtype)
    t = torch.tensor([scorer.conditions[0].timestep], device=scorer.device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        scorer.parts.unet(sample, t, encoder_hidden_states=context)
    return int(counter.get_total_flops())


def device_peak(device: Any, dtype_name: str) -> tuple[float | None, str]:
    import torch

    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for (key, dt), peak in PEAKS_TFLOPS.items():
        if key in name and dt == dtype_name:
            return peak, name
    return None, name


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from benchmarks.naive_reference import NaiveReference
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import Scorer, default_dtype, resolve_device
    from discff_cli.engine.models import load_sd

    device = resolve_device(args.device)
    dtype = default_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    model = build_sd21_random(args) if args.model == "sd21-random" else args.model
    parts = load_sd(model, device=str(device), dtype=dtype)
    levels = tuple(float(s) for s in args.levels.split(","))
    config = EngineConfig(steps=args.steps, levels=levels, seed=args.seed, device=str(device),
                          batch_size=args.batch_size, score=args.score)
    images, query = candidates(args.candidates)
    n_naive = min(args.naive_candidates or args.candidates, args.candidates)

    # Warm-up (allocator, kernels, lazy inits) on both paths, on a throwaway scorer.
    warm = Scorer(parts, EngineConfig(steps=1, levels=(0.5,), seed=args.seed, device=str(device)), device)
    warm.rank(images[:2], [query] * 2)
    NaiveReference(warm).score_pairs(images[:1], [query])

    engine = Scorer(parts, config, device)
    engine_scores, engine_s = timed(lambda: engine.rank(images, [query] * len(images)).values, device)
    cold_passes = engine.unet_passes  # pairs x conditions, plus the empty prompt per image (denoise, discffusion)
    _, warm_s = timed(lambda: engine.rank(images, [query] * len(images)).values, device)  # latents, text, e(x, ∅) cached
    n_items = len(engine.conditions) * args.candidates
    info = {
        "model": args.model, "score": args.score, "unet_passes_cold": cold_passes,
        "unet_passes_warm": engine.unet_passes - cold_passes, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "latent": list(engine.latent_shape), "candidates": args.candidates, "conditions": len(engine.conditions),
        "engine_batch": engine.config.batch_size or "auto", "engine_s": engine_s,
        "engine_items_per_s": n_items / engine_s, "engine_warm_s": warm_s, "engine_warm_items_per_s": n_items / warm_s,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"model {args.model} ({model}) on {device}, {info['dtype']}, latent {tuple(engine.latent_shape)}, "
          f"{args.candidates} candidates x {len(engine.conditions)} (timestep, level) = {n_items} pair-conditions")
    print(f"query: {query!r}")
    print(f"engine ({args.score}): {engine_s:8.2f} s  {cold_passes / engine_s:9.1f} U-Net passes/s  (cold caches; "
          f"{cold_passes} U-Net passes, {engine.empty_passes} of them under the empty prompt)")
    print(f"engine, latents+text cached: {warm_s:8.2f} s  {n_items / warm_s:9.1f} U-Net passes/s")

    flops = unet_flops_per_item(engine)
    peak, device_name = device_peak(device, info["dtype"])
    info.update(unet_gflop_per_item=flops / 1e9, device_name=device_name)
    achieved = flops * n_items / warm_s / 1e12
    info["achieved_tflops_warm"] = achieved
    line = f"U-Net: {flops / 1e9:.1f} GFLOP per item (FlopCounterMode, one forward); achieved {achieved:.2f} TFLOP/s"
    if peak:
        info.update(peak_tflops=peak, mfu=achieved / peak)
        line += f" = {100 * achieved / peak:.1f}% of {device_name} dense {info['dtype']} peak {peak:.0f} TFLOP/s"
    print(line)

    if not args.skip_naive:
        naive = NaiveReference(engine)
        naive_scores, naive_part_s = timed(lambda: naive.score_pairs(images[:n_naive], [query] * n_naive), device)
        naive_s = naive_part_s * args.candidates / n_naive
        diff = float(np.max(np.abs(naive_scores - engine_scores[:n_naive])))
        tolerance = 1e-4 if dtype == torch.float32 else 5e-2 * max(1.0, float(np.max(np.abs(naive_scores))))
        scaled = f" (measured on {n_naive}, scaled x{args.candidates / n_naive:.1f})" if n_naive < args.candidates else ""
        n_naive_items = len(engine.conditions) * args.candidates
        print(f"naive:  {naive_s:8.2f} s  {n_naive_items / naive_s:9.1f} scoring passes/s "
              f"({2 * n_naive_items / naive_s:.1f} U-Net items/s with the unconditional duplicate){scaled}")
        print(f"scores: max abs difference naive vs engine {diff:.2e} over {n_naive} candidates "
              f"(tolerance {tolerance:.0e}); same top-1: {int(np.argmax(naive_scores)) == int(np.argmax(engine_scores[:n_naive]))}")
        info.update(naive_s=naive_s, naive_measured_candidates=n_naive, naive_items_per_s=n_naive_items / naive_s,
                    max_abs_diff=diff, speedup=naive_s / engine_s)
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(info, indent=2))
        assert diff <= tolerance, f"scores differ by {diff} > {tolerance}"
        print(f"speedup: {naive_s / engine_s:.2f}")
    elif args.json_path:
        Path(args.json_path).write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    main()
