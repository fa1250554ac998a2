"""Does the demo diffusion model really follow its text? Generate and judge.

Why: Discffusion scores image-text pairs from the U-Net's cross-attention, which is only
meaningful if the model learned text conditioning. Two checks on the *saved* model
directory (loaded by the same diffusers/transformers classes as Stable Diffusion):

1. Generation: DDIM + classifier-free guidance images for test-split captions, judged by
   the world's pixel-rule checker (training.world.check_image): colour, shape, relation.
2. Diffusion-Classifier sanity figure: for test images, is the denoising loss (shared noise,
   a grid of timesteps) lower with the true caption than with each kind of hard negative?

    python -m training.demo_models.check_generation --model discff_cli/assets/demo/diffusion \
        --n-single 240 --n-two 240 --sanity-n 200 --out docs/results/diffusion/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from discff_cli.evaluation.stats import wilson_rounded

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "discff_cli" / "assets" / "demo" / "diffusion"


def load_pipeline(model_dir: str | Path, device: str = "cpu"):
    """The saved model as a StableDiffusionPipeline in fp32 (the engine's CPU dtype)."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, torch.float32)



def test_prompts(n: int, n_objects: int, seed: int = 0) -> list[tuple]:
    """(scene, caption) pairs of the test split with n_objects objects (a random true phrasing each)."""
    from training.world import iter_split

    return [(ex.scene, ex.caption) for _, ex in iter_split("test", n, seed, n_objects=n_objects)]


def generate(pipe, prompts: list[str], steps: int = 50, guidance: float = 5.0, seed: int = 0,
             batch: int = 64) -> list:
    """One image per prompt; image i depends only on (seed, i), not on the batch size."""
    import torch

    device = pipe.device
    images = []
    for b in range(0, len(prompts), batch):
        chunk = prompts[b : b + batch]
        gens = [torch.Generator(device).manual_seed(seed * 1_000_003 + b + i) for i in range(len(chunk))]
        with torch.inference_mode():
            images += pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens).images
    return images


def judge(images: list, scenes: list) -> dict:
    """Rates of check_image's verdicts with 95% intervals."""
    from training.world import check_image

    verdicts = [check_image(img, sc) for img, sc in zip(images, scenes)]
    out: dict = {"n": len(verdicts)}
    for key in ("ok", "colour_ok", "shape_ok", "relation_ok"):
        k = sum(v[key] for v in verdicts)
        out[key] = round(k / max(1, len(verdicts)), 4)
        out[key + "_ci95"] = wilson_rounded(k, len(verdicts))
    return out


def generation_check(pipe, n_single: int, n_two: int, steps: int, guidance: float, seed: int = 0,
                     batch: int = 64) -> tuple[dict, list]:
    """Generate for single- and two-object test captions and judge them; also returns a few samples."""
    result, samples = {}, []
    for name, n, k in (("single_object", n_single, 1), ("two_object", n_two, 2)):
        if n <= 0:
            continue
        pairs = test_prompts(n, k, seed)
        t0 = time.time()
        imgs = generate(pipe, [c for _, c in pairs], steps, guidance, seed, batch)
        result[name] = judge(imgs, [s for s, _ in pairs]) | {"time_s": round(time.time() - t0, 1)}
        samples += [(img, cap) for img, (_, cap) in zip(imgs[:16], pairs[:16])]
    result["settings"] = {"sampler": "DDIM", "steps": steps, "guidance_scale": guidance, "seed": seed,
                          "prompts": "test split, one random true phrasing per scene"}
    return result, samples


def _negative(scene, true_caption: str, tag_negs: list[str], rng: random.Random) -> str:
    """The hard negative aligned with the true caption's template (same phrasing, one detail changed)."""
    from training.world import captions

    caps = captions(scene)
    j = caps.index(true_caption)
    block = rng.randrange(max(1, len(tag_negs) // len(caps)))
    return tag_negs[block * len(caps) + j]


def denoising_sanity(pipe, n: int = 200, n_timesteps: int = 20, seed: int = 0, batch: int = 256) -> dict:
    """Fraction of test images whose true caption has a lower mean denoising loss than a hard
    negative of each tag (Diffusion Classifier, shared noise per image and timestep)."""
    import torch

    from training.world import hard_negatives, make_split

    device = pipe.device
    rng = random.Random(seed)
    ts = torch.linspace(50, 950, n_timesteps, device=device).long()
    ac = pipe.scheduler.alphas_cumprod.to(device)[ts].view(-1, 1, 1, 1)
    wins: dict[str, list[bool]] = {}
    margins: dict[str, list[float]] = {}
    for ex in make_split("test", n, seed=seed):
        texts = [ex.caption]
        tags = []
        for tag, negs in hard_negatives(ex.scene).items():
            texts.append(_negative(ex.scene, ex.caption, negs, rng))
            tags.append(tag)
        losses = _caption_losses(pipe, ex.image, texts, ts, ac, seed, batch)
        for tag, loss in zip(tags, losses[1:]):
            wins.setdefault(tag, []).append(bool(losses[0] < loss))
            margins.setdefault(tag, []).append(float(loss - losses[0]))
    out = {"n_images": n, "timesteps": ts.tolist(), "per_tag": {}}
    for tag, w in wins.items():
        out["per_tag"][tag] = {"n": len(w), "true_lower": round(float(np.mean(w)), 4), "ci95": wilson_rounded(sum(w), len(w)),
                               "mean_loss_gap": round(float(np.mean(margins[tag])), 5)}
    every = [x for w in wins.values() for x in w]
    out["all"] = {"n": len(every), "true_lower": round(float(np.mean(every)), 4), "ci95": wilson_rounded(sum(every), len(every))}
    return out


def _caption_losses(pipe, image, texts: list[str], ts, ac, seed: int, batch: int) -> list[float]:
    import torch

    device = pipe.device
    x = torch.from_numpy(np.array(image.convert("RGB"))).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.inference_mode():
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        g = torch.Generator(device).manual_seed(seed)
        eps = torch.randn((len(ts),) + z.shape[1:], device=device, generator=g)
        zt = ac.sqrt() * z + (1 - ac).sqrt() * eps
        ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)
        enc = pipe.text_encoder(ids)[0]
        n_t = len(ts)
        all_z = zt.repeat(len(texts), 1, 1, 1)
        all_t = ts.repeat(len(texts))
        all_c = enc.repeat_interleave(n_t, dim=0)
        errs = []
        for i in range(0, len(all_z), batch):
            pred = pipe.unet(all_z[i : i + batch], all_t[i : i + batch], all_c[i : i + batch]).sample
            errs.append(((pred - eps.repeat(len(texts), 1, 1, 1)[i : i + batch]) ** 2).mean(dim=(1, 2, 3)))
        errs = torch.cat(errs).view(len(texts), n_t).mean(dim=1)
    return errs.tolist()


def save_grid(samples: list, path: Path, cols: int = 8) -> None:
    """Generated images in a grid (captions go to a side .txt file, in grid order)."""
    from PIL import Image

    rows = math.ceil(len(samples) / cols)
    grid = Image.new("RGB", (cols * 66, rows * 66), (255, 255, 255))
    for i, (img, _) in enumerate(samples):
        grid.paste(img, ((i % cols) * 66 + 1, (i // cols) * 66 + 1))
    grid.save(path)
    path.with_suffix(".txt").write_text("\n".join(c for _, c in samples) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-single", type=int, default=240)
    p.add_argument("--n-two", type=int, default=240)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[5.0],
                   help="classifier-free guidance scale(s); the first is the headline, the rest a sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--sanity-n", type=int, default=0, help="test images for the denoising-loss sanity figure")
    p.add_argument("--out", type=Path, default=None, help="metrics JSON to write")
    p.add_argument("--grid", type=Path, default=None, help="PNG of sample generations")
    args = p.parse_args(argv)
    pipe = load_pipeline(args.model, args.device)
    metrics, samples = generation_check(pipe, args.n_single, args.n_two, args.steps, args.guidance[0], args.seed, args.batch)
    for g in args.guidance[1:]:
        sweep, _ = generation_check(pipe, args.n_single, args.n_two, args.steps, g, args.seed, args.batch)
        metrics.setdefault("guidance_sweep", {})[str(g)] = {k: sweep[k]["ok"] for k in ("single_object", "two_object") if k in sweep}
    if args.sanity_n > 0:
        t0 = time.time()
        metrics["denoising_sanity"] = denoising_sanity(pipe, args.sanity_n, seed=args.seed)
        metrics["denoising_sanity"]["time_s"] = round(time.time() - t0, 1)
    metrics["model"] = str(args.model)
    metrics["device"] = args.device
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.grid and samples:
        save_grid(samples, args.grid)


if __name__ == "__main__":
    main()
