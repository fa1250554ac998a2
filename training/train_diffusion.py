"""Train the demo text-to-image latent diffusion model on the demo world.

Why: `--model demo` must run the same Discffusion code path as Stable Diffusion, offline, on
a CPU, and its cross-attention must carry the text. So this trains an SD-2.1-shaped model
(training.diffusion_model_configs) in two stages, like SD itself:

1. AutoencoderKL on world images (L1 + MSE reconstruction, tiny KL); its scaling_factor is
   then set to 1/std of the latents so the U-Net sees unit-variance inputs.
2. UNet2DConditionModel + CLIPTextModel jointly, epsilon prediction on SD's scaled-linear
   1000-step schedule, 10% captions dropped to "" for classifier-free guidance, EMA weights.

Scenes are rendered once (in parallel); every step re-draws one of each scene's true
phrasings. The result is written as a StableDiffusionPipeline directory (fp16 safetensors,
fp32 configs), and hparams / curves / metrics go to --results.

    python -m training.train_diffusion --out discff_cli/assets/demo/diffusion \
        --results training/results/diffusion --device cuda --time-budget 300
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from training.diffusion_model_configs import (
    SCHEDULER_CONFIG,
    TEXT_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    TrainConfig,
)


# ----------------------------------------------------------------------------- data


def _render_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, list]:
    from training.world import make_example

    start, stop, seed = args
    exs = [make_example("train", i, seed) for i in range(start, stop)]
    return np.stack([np.asarray(e.image) for e in exs]), [e.scene for e in exs]


def render_train_set(n: int, seed: int, workers: int) -> tuple[np.ndarray, list]:
    """n train-split scenes and their images (uint8 [n, 64, 64, 3]); identical for any worker count."""
    step = 2000
    chunks = [(s, min(s + step, n), seed) for s in range(0, n, step)]
    if workers > 1:
        with Pool(workers) as pool:
            parts = pool.map(_render_chunk, chunks)
    else:
        parts = [_render_chunk(c) for c in chunks]
    return np.concatenate([p[0] for p in parts]), [s for p in parts for s in p[1]]


class CaptionTable:
    """Token ids of every true phrasing of every scene, kept on the device.

    Row 0 is the empty caption (classifier-free guidance); scene i owns rows
    offset[i] : offset[i] + count[i] of `index`, which point into `tokens`.
    """

    def __init__(self, scenes: list, tokenizer, device) -> None:
        import torch

        from training.world import captions

        unique: dict[str, int] = {"": 0}
        index, offset, count = [], [], []
        for scene in scenes:
            caps = captions(scene)
            offset.append(len(index))
            count.append(len(caps))
            index.extend(unique.setdefault(c, len(unique)) for c in caps)
        texts = list(unique)
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        self.n_unique = len(texts)
        self.tokens = ids.to(device)
        self.index = torch.tensor(index, device=device)
        self.offset = torch.tensor(offset, device=device)
        self.count = torch.tensor(count, device=device)

    def sample(self, scene_idx, dropout: float, generator=None):
        import torch

        u = torch.rand(scene_idx.shape, device=scene_idx.device, generator=generator)
        pick = self.offset[scene_idx] + (u * self.count[scene_idx]).long().clamp_max(self.count[scene_idx] - 1)
        rows = self.index[pick]
        drop = torch.rand(scene_idx.shape, device=scene_idx.device, generator=generator) < dropout
        return self.tokens[torch.where(drop, torch.zeros_like(rows), rows)]


# ----------------------------------------------------------------------------- models


def build_models():
    """Fresh VAE, text encoder and U-Net from the configs (as data)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return (AutoencoderKL(**VAE_CONFIG), CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)),
            UNet2DConditionModel(**UNET_CONFIG))


def load_models(model_dir: Path, device):
    """VAE, text encoder and U-Net of a saved demo model, in fp32, to continue training."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    d = str(model_dir)
    vae = AutoencoderKL.from_pretrained(d, subfolder="vae", local_files_only=True)
    te = CLIPTextModel.from_pretrained(d, subfolder="text_encoder", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(d, subfolder="unet", local_files_only=True)
    return tuple(m.to(device, torch.float32).eval() for m in (vae, te, unet))


def _lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% over training progress in [0, 1]."""
    w = min(1.0, (step + 1) / max(1, warmup))
    return w * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _to_unit(images_u8):
    return images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------- stage 1: VAE


def train_vae(vae, images, cfg: TrainConfig, device, log) -> list[dict]:
    import torch

    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    curve, acc, t0 = [], [], time.time()
    for step in range(cfg.vae_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * _lr_factor(step / cfg.vae_steps, step, 100)
        x = _to_unit(images[torch.randint(len(images), (cfg.vae_batch,), device=device, generator=gen)])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=gen)).sample.float()
        l1, mse = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
        kl = post.kl().float().mean()
        loss = l1 + mse + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        acc.append([l1.item(), mse.item(), kl.item()]) if step % 10 == 0 else None
        if (step + 1) % 100 == 0 or step + 1 == cfg.vae_steps:
            a = np.mean(acc, axis=0)
            curve.append({"step": step + 1, "l1": a[0], "mse": a[1], "kl": a[2], "time_s": time.time() - t0})
            acc = []
            log(f"vae step {step + 1}: l1 {a[0]:.4f} mse {a[1]:.5f} kl {a[2]:.1f}")
    vae.eval()
    return curve


def encode_all(vae, images, device, batch: int = 2048):
    """Posterior mean and std of every image (bf16 on the GPU, to keep memory small)."""
    import torch

    means, stds = [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(images), batch):
            post = vae.encode(_to_unit(images[i : i + batch])).latent_dist
            means.append(post.mean.float())
            stds.append(post.std.float())
    return torch.cat(means), torch.cat(stds)


def vae_recon_check(vae, n: int, device) -> dict:
    """check_image on VAE reconstructions of val images: the ceiling for generated images."""
    import torch
    from PIL import Image

    from training.world import check_image, make_split

    exs = make_split("val", n, seed=0)
    x = torch.from_numpy(np.stack([np.asarray(e.image) for e in exs])).to(device)
    with torch.no_grad():
        rec = vae.decode(vae.encode(_to_unit(x)).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    ok = [check_image(Image.fromarray(r), e.scene)["ok"] for r, e in zip(rec, exs)]
    return {"n": n, "recon_ok": float(np.mean(ok))}


# ----------------------------------------------------------------------------- stage 2: U-Net + text


def train_unet(unet, text_encoder, lat_mean, lat_std, table: CaptionTable, scaling: float,
               cfg: TrainConfig, device, log) -> list[dict]:
    """Joint epsilon-prediction training; returns the loss curve and leaves EMA weights in place."""
    import torch
    from diffusers import DDPMScheduler

    unet.to(device).train()
    text_encoder.to(device).train()
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
    ac = sched.alphas_cumprod.to(device)
    groups = [{"params": list(unet.parameters()), "lr": cfg.unet_lr},
              {"params": list(text_encoder.parameters()), "lr": cfg.text_lr}]
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    params = groups[0]["params"] + groups[1]["params"]
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator(device).manual_seed(cfg.seed + 2)
    n = len(lat_mean)
    curve, acc, t0 = [], [], time.time()
    step = 0
    while True:
        elapsed = time.time() - t0
        progress = step / cfg.unet_steps
        if cfg.time_budget_s > 0:
            progress = max(progress, elapsed / cfg.time_budget_s)
        if progress >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * _lr_factor(progress, step, cfg.warmup)
        idx = torch.randint(n, (cfg.unet_batch,), device=device, generator=gen)
        z = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, device=device, generator=gen)) * scaling
        ids = table.sample(idx, cfg.caption_dropout, gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.unet_batch,), device=device, generator=gen)
        noise = torch.randn(z.shape, device=device, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            enc = text_encoder(ids)[0]
            pred = unet(zt, t, enc).sample
        loss = ((pred.float() - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % 10 == 0:
            acc.append(loss.detach())
        step += 1
        if step % 200 == 0:
            mean_loss = torch.stack(acc).mean().item()
            acc = []
            curve.append({"step": step, "loss": mean_loss, "lr": opt.param_groups[0]["lr"], "time_s": time.time() - t0})
            log(f"unet step {step}: loss {mean_loss:.4f} lr {opt.param_groups[0]['lr']:.2e} ({time.time() - t0:.0f}s)")
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    log(f"unet: {step} steps in {time.time() - t0:.0f}s")
    return curve


# ----------------------------------------------------------------------------- saving


def _halve(path: Path, prefix: str = "") -> None:
    """Rewrite a safetensors file in fp16 (half the package size); configs keep fp32, so
    diffusers and transformers load these weights as fp32 unless told otherwise."""
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    out = {(k if k.startswith(prefix) else prefix + k): v.to(torch.float16).contiguous() for k, v in sd.items()}
    save_file(out, str(path), metadata={"format": "pt"})


def save_pipeline(out: Path, vae, text_encoder, unet) -> None:
    """Write a StableDiffusionPipeline directory that the SD loading code reads unchanged.

    The tokenizer is open_clip's BPE as a CLIPTokenizer (training.tokenizer). The text
    encoder's keys carry the `text_model.` prefix of SD checkpoints, which every
    transformers version loads.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from training.tokenizer import write_clip_tokenizer

    if out.exists():
        shutil.rmtree(out)
    tok_dir = write_clip_tokenizer(out / "tokenizer")
    pipe = StableDiffusionPipeline(
        vae=vae.cpu().float(), text_encoder=text_encoder.cpu().float(),
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet.cpu().float(),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
    write_clip_tokenizer(out / "tokenizer")  # the exact files, whatever save_pretrained wrote
    _halve(out / "vae" / "diffusion_pytorch_model.safetensors")
    _halve(out / "unet" / "diffusion_pytorch_model.safetensors")
    _halve(out / "text_encoder" / "model.safetensors", prefix="text_model.")
    te_cfg = json.loads((out / "text_encoder" / "config.json").read_text())
    te_cfg["dtype"] = "float32"
    (out / "text_encoder" / "config.json").write_text(json.dumps(te_cfg, indent=2) + "\n")


def dir_size_mb(path: Path) -> dict:
    sizes = {p.relative_to(path).as_posix(): p.stat().st_size / 1e6 for p in sorted(path.rglob("*")) if p.is_file()}
    return {"total_mb": round(sum(sizes.values()), 2), "files_mb": {k: round(v, 3) for k, v in sizes.items()}}


def _write_curve(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------- main


def train(cfg: TrainConfig, out: Path, results: Path, device_name: str, workers: int,
          init_from: Path | None = None) -> dict:
    import torch
    from transformers import CLIPTokenizer

    from training.tokenizer import write_clip_tokenizer

    results.mkdir(parents=True, exist_ok=True)
    log_file = (results / "train_log.txt").open("w")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    device = torch.device(device_name)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    (results / "hparams.json").write_text(json.dumps(
        {"train": cfg.to_dict(), "vae": VAE_CONFIG, "text_encoder": TEXT_CONFIG, "unet": UNET_CONFIG,
         "scheduler": SCHEDULER_CONFIG}, indent=2) + "\n")
    t_start = time.time()
    images_np, scenes = render_train_set(cfg.n_train, cfg.seed, workers)
    log(f"rendered {len(scenes)} train scenes in {time.time() - t_start:.0f}s")
    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(results / ".tokenizer"))
    shutil.rmtree(results / ".tokenizer")
    table = CaptionTable(scenes, tok, device)
    log(f"{table.n_unique} distinct captions")
    images = torch.from_numpy(images_np).to(device)
    t_vae = time.time()
    if init_from is None:
        vae, text_encoder, unet = build_models()
        vae_curve = train_vae(vae, images, cfg, device, log)
        lat_mean, lat_std = encode_all(vae, images, device)
        scaling = float(1.0 / lat_mean.std())
        vae.register_to_config(scaling_factor=scaling)
    else:  # continue a saved model: its VAE (and scaling) stay frozen, U-Net + text train on
        vae, text_encoder, unet = load_models(init_from, device)
        vae_curve = []
        lat_mean, lat_std = encode_all(vae, images, device)
        scaling = float(vae.config.scaling_factor)
        log(f"continuing {init_from}")
    recon = vae_recon_check(vae, 200, device)
    log(f"vae: scaling_factor {scaling:.4f}, recon check {recon}, {time.time() - t_vae:.0f}s")
    del images
    t_unet = time.time()
    unet_curve = train_unet(unet, text_encoder, lat_mean, lat_std, table, scaling, cfg, device, log)
    unet_s = time.time() - t_unet
    save_pipeline(out, vae, text_encoder, unet)
    _write_curve(results / "vae_curve.csv", vae_curve)
    _write_curve(results / "unet_curve.csv", unet_curve)
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "n_params_m": {"vae": sum(p.numel() for p in vae.parameters()) / 1e6,
                       "text_encoder": sum(p.numel() for p in text_encoder.parameters()) / 1e6,
                       "unet": sum(p.numel() for p in unet.parameters()) / 1e6},
        "size": dir_size_mb(out),
        "scaling_factor": scaling,
        "vae_recon_check": recon,
        "vae_final": vae_curve[-1] if vae_curve else None,
        "init_from": str(init_from) if init_from else None,
        "unet_steps": unet_curve[-1]["step"] if unet_curve else 0,
        "unet_final_loss": unet_curve[-1]["loss"] if unet_curve else None,
        "time_s": {"total": time.time() - t_start, "unet": unet_s},
    }
    (results / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"saved {out} ({summary['size']['total_mb']} MB)")
    log_file.close()
    return summary


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("discff_cli/assets/demo/diffusion"))
    p.add_argument("--results", type=Path, default=Path("training/results/diffusion"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue training a saved model (VAE frozen); e.g. the bundled one, with a bigger batch")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of U-Net training (0 = use --unet-steps)")
    for name, val in TrainConfig().to_dict().items():
        if name == "time_budget_s":
            continue
        p.add_argument("--" + name.replace("_", "-"), type=type(val), default=val)
    args = p.parse_args(argv)
    fields = {k: getattr(args, k) for k in TrainConfig().to_dict() if k != "time_budget_s"}
    cfg = TrainConfig(**fields, time_budget_s=args.time_budget or 0.0)
    return cfg, args


def main(argv=None) -> None:
    cfg, args = parse_args(argv)
    train(cfg, args.out, args.results, args.device, args.workers, args.init_from)


if __name__ == "__main__":
    main()
