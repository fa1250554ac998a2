"""Train the demo text-to-image latent diffusion model on the demo world.

Why: `--model demo` must run the same Discffusion code path as Stable Diffusion, offline, on
a CPU, and its cross-attention must carry the text. So this trains an SD-2.1-shaped model
(training.demo_models.diffusion_model_configs) in two stages, like SD itself:

1. AutoencoderKL on world images (L1 + MSE reconstruction, tiny KL); its scaling_factor is
   then set to 1/std of the latents so the U-Net sees unit-variance inputs.
2. UNet2DConditionModel, epsilon prediction on SD's scaled-linear 1000-step schedule,
   captions dropped to "" (--caption-dropout) for classifier-free guidance, EMA weights. The
   text encoder is either a CLIPTextModel trained jointly from scratch (--text-encoder train)
   or, as in SD 2.x, a frozen pretrained one: the demo CLIP's text tower read at its
   penultimate layer (--text-encoder clip; training.demo_models.clip_text_export). A frozen encoder's
   states are computed once per distinct caption, so the U-Net step carries no text model.

Scenes are rendered once (in parallel); every step re-draws one of each scene's true
phrasings (--extra-phrasings 1 adds world.extra_captions, never used by the test split),
and --two-object-weight / --curriculum-ramp set how many of each batch are two-object
scenes. --time-budget caps U-Net seconds, --deadline the whole run's; either way, and on
SIGTERM/SIGINT, training stops cleanly and the EMA model is saved. The result is written
as a StableDiffusionPipeline directory (fp16 safetensors, fp32 configs) that
`discff_cli.engine.models.load_sd` loads; hparams / curves / summary go to --results.

    python -m training.demo_models.train_diffusion --out discff_cli/assets/demo/diffusion \
        --results docs/results/diffusion --device cuda --time-budget 300
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import signal
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from training.demo_models.diffusion_model_configs import SCHEDULER_CONFIG, TrainConfig, arch_configs

DEMO_CLIP_DIR = Path(__file__).resolve().parents[2] / "discff_cli" / "assets" / "demo" / "clip"
SAVE_RESERVE_S = 20.0  # seconds --deadline keeps back for the EMA copy, saving and the summary


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
    With `extra`, world.extra_captions joins each scene's phrasings.
    """

    def __init__(self, scenes: list, tokenizer, device, extra: bool = False) -> None:
        import torch

        from training.world import captions, extra_captions

        unique: dict[str, int] = {"": 0}
        index, offset, count = [], [], []
        for scene in scenes:
            caps = captions(scene) + (extra_captions(scene) if extra else [])
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
        self.states = None  # [n_unique, m, d] once encode_frozen ran

    def sample_rows(self, scene_idx, dropout: float, generator=None):
        """One random true phrasing per scene, as rows of `tokens`; row 0 ("") with prob. `dropout`."""
        import torch

        u = torch.rand(scene_idx.shape, device=scene_idx.device, generator=generator)
        pick = self.offset[scene_idx] + (u * self.count[scene_idx]).long().clamp_max(self.count[scene_idx] - 1)
        rows = self.index[pick]
        drop = torch.rand(scene_idx.shape, device=scene_idx.device, generator=generator) < dropout
        return torch.where(drop, torch.zeros_like(rows), rows)

    def encode_frozen(self, text_encoder, batch: int = 1024) -> None:
        """Token states of every distinct caption under a frozen encoder, computed once."""
        import torch

        with torch.no_grad():
            self.states = torch.cat([text_encoder(self.tokens[i : i + batch])[0].float()
                                     for i in range(0, len(self.tokens), batch)])


class SceneSampler:
    """Draws batches of scene indices with a chosen share of two-object scenes (the curriculum).

    The world renders about half one-object scenes; binding and relations only occur in the
    other half, so --two-object-weight lets the U-Net see more of them without new data.
    """

    def __init__(self, scenes: list, device) -> None:
        import torch

        two = [i for i, s in enumerate(scenes) if len(s.objects) == 2]
        one = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
        if not one or not two:
            raise ValueError("the training set needs both one- and two-object scenes")
        self.one = torch.tensor(one, device=device)
        self.two = torch.tensor(two, device=device)

    def draw(self, batch: int, p_two: float, generator=None):
        import torch

        device = self.one.device
        is_two = torch.rand(batch, device=device, generator=generator) < p_two
        i1 = self.one[torch.randint(len(self.one), (batch,), device=device, generator=generator)]
        i2 = self.two[torch.randint(len(self.two), (batch,), device=device, generator=generator)]
        return torch.where(is_two, i2, i1)


def two_object_share(cfg: TrainConfig, progress: float) -> float:
    """The curriculum: 0.5 (the world's own mix) rising linearly to two_object_weight over curriculum_ramp."""
    if cfg.curriculum_ramp <= 0:
        return cfg.two_object_weight
    return 0.5 + (cfg.two_object_weight - 0.5) * min(1.0, progress / cfg.curriculum_ramp)


class StopFlag:
    """Set by SIGTERM / SIGINT, so a killed run still leaves its EMA model saved."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, budgets still apply
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.set = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- models


def build_text_encoder(cfg: TrainConfig, configs: dict, clip_dir: Path):
    """The conditioning text encoder: a fresh CLIPTextModel, or the frozen demo-CLIP text tower."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if cfg.text_encoder == "clip":
        from training.demo_models.clip_text_export import export_clip_text_encoder

        return export_clip_text_encoder(clip_dir, cfg.clip_layer)
    if cfg.text_encoder != "train":
        raise ValueError("text_encoder must be 'train' or 'clip'")
    return CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))


def build_models(configs: dict, text_encoder):
    """Fresh VAE and U-Net from the configs (as data); the U-Net attends to `text_encoder`'s width."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    configs["unet"]["cross_attention_dim"] = text_encoder.config.hidden_size
    configs["text_encoder"] = text_encoder.config.to_diff_dict()
    return AutoencoderKL(**configs["vae"]), UNet2DConditionModel(**configs["unet"])


def load_vae(model_dir: Path, device):
    """A saved model's VAE (and, in its config, the latent scaling_factor), frozen, in fp32."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(model_dir), subfolder="vae", local_files_only=True, torch_dtype=torch.float32)
    return vae.to(device).requires_grad_(False).eval()


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


def train_unet(unet, text_encoder, lat_mean, lat_std, table: CaptionTable, scenes: SceneSampler, scaling: float,
               cfg: TrainConfig, device, log, stop: StopFlag | None = None) -> list[dict]:
    """Epsilon-prediction training (text encoder too unless frozen); returns the loss curve and
    leaves EMA weights in place. Stops at unet_steps, at time_budget_s, or when `stop` is set."""
    import torch
    from diffusers import DDPMScheduler

    frozen_text = cfg.text_encoder == "clip"
    unet.to(device).train()
    text_encoder.to(device).train(not frozen_text)
    if frozen_text:
        table.encode_frozen(text_encoder.eval())
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
    ac = sched.alphas_cumprod.to(device)
    groups = [{"params": list(unet.parameters()), "lr": cfg.unet_lr}]
    if not frozen_text:
        groups.append({"params": list(text_encoder.parameters()), "lr": cfg.text_lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    params = [p for g in groups for p in g["params"]]
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator(device).manual_seed(cfg.seed + 2)
    log_every = max(1, min(200, cfg.unet_steps // 10))
    curve, acc, t0 = [], [], time.time()
    step = 0
    while True:
        elapsed = time.time() - t0
        progress = step / cfg.unet_steps
        if cfg.time_budget_s > 0:
            progress = max(progress, elapsed / cfg.time_budget_s)
        if progress >= 1.0 or (stop is not None and stop.set):
            break
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * _lr_factor(progress, step, cfg.warmup)
        idx = scenes.draw(cfg.unet_batch, two_object_share(cfg, progress), gen)
        z = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, device=device, generator=gen)) * scaling
        rows = table.sample_rows(idx, cfg.caption_dropout, gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.unet_batch,), device=device, generator=gen)
        noise = torch.randn(z.shape, device=device, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            enc = table.states[rows] if frozen_text else text_encoder(table.tokens[rows])[0]
            pred = unet(zt, t, enc).sample
        loss = ((pred.float() - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % min(10, log_every) == 0:
            acc.append(loss.detach())
        step += 1
        if step % log_every == 0 and acc:
            _curve_point(curve, acc, step, opt, t0, log)
            acc = []
    if acc:
        _curve_point(curve, acc, step, opt, t0, log)
    if stop is not None and stop.set:
        log(f"unet: stop signal at step {step}; saving the EMA weights")
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    log(f"unet: {step} steps in {time.time() - t0:.0f}s")
    return curve


def _curve_point(curve: list, acc: list, step: int, opt, t0: float, log) -> None:
    import torch

    mean_loss = torch.stack(acc).mean().item()
    curve.append({"step": step, "loss": mean_loss, "lr": opt.param_groups[0]["lr"], "time_s": time.time() - t0})
    log(f"unet step {step}: loss {mean_loss:.4f} lr {opt.param_groups[0]['lr']:.2e} ({time.time() - t0:.0f}s)")


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

    The tokenizer is open_clip's BPE as a CLIPTokenizer (training.demo_models.tokenizer). The text
    encoder's keys carry the `text_model.` prefix of SD checkpoints, which every
    transformers version loads.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from training.demo_models.tokenizer import write_clip_tokenizer

    if out.exists():
        shutil.rmtree(out)
    max_length = int(text_encoder.config.max_position_embeddings)  # 77, or 16 for the demo-CLIP tower
    tok_dir = write_clip_tokenizer(out / "tokenizer", max_length=max_length)
    pipe = StableDiffusionPipeline(
        vae=vae.cpu().float(), text_encoder=text_encoder.cpu().float(),
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet.cpu().float(),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
    write_clip_tokenizer(out / "tokenizer", max_length=max_length)  # the exact files, whatever save_pretrained wrote
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


def open_log(results: Path, mode: str = "w", stamp: str = "%H:%M:%S"):
    """A log function that prints and appends to results/train_log.txt ("a": a resumed run keeps its history)."""
    log_file = (results / "train_log.txt").open(mode)

    def log(msg: str) -> None:
        line = f"[{time.strftime(stamp)}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    return log, log_file


def _models(cfg: TrainConfig, configs: dict, images, device, log, init_from: Path | None,
            vae_from: Path | None, clip_dir: Path):
    """VAE (trained here, or frozen from --vae-from / --init-from), text encoder and U-Net, plus latents."""
    if init_from is not None:  # continue a saved model: its VAE (and scaling) frozen, U-Net (+ text) train on
        vae, saved_text, unet = load_models(init_from, device)
        text_encoder = saved_text if cfg.text_encoder == "train" else build_text_encoder(cfg, configs, clip_dir)
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise SystemExit(f"--init-from {init_from}: its U-Net attends to width {unet.config.cross_attention_dim}, "
                             f"the text encoder gives {text_encoder.config.hidden_size}")
        log(f"continuing {init_from}")
    else:
        text_encoder = build_text_encoder(cfg, configs, clip_dir)
        vae_new, unet = build_models(configs, text_encoder)
        vae = load_vae(vae_from, device) if vae_from is not None else vae_new
    vae_curve = []
    if init_from is None and vae_from is None:
        vae_curve = train_vae(vae, images, cfg, device, log)
    lat_mean, lat_std = encode_all(vae, images, device)
    if vae_curve:
        vae.register_to_config(scaling_factor=float(1.0 / lat_mean.std()))
    return vae, text_encoder, unet, vae_curve, lat_mean, lat_std


def _unet_budget(cfg: TrainConfig, deadline_s: float, t_start: float, log) -> TrainConfig:
    """--deadline (whole run, seconds) turned into a U-Net time budget, keeping SAVE_RESERVE_S to save."""
    if deadline_s <= 0:
        return cfg
    left = deadline_s - (time.time() - t_start) - SAVE_RESERVE_S
    if left <= 0:
        log(f"--deadline {deadline_s:.0f}s already spent before U-Net training; training 1 step")
        left = 1e-3
    budget = min(cfg.time_budget_s, left) if cfg.time_budget_s > 0 else left
    log(f"U-Net time budget {budget:.0f}s (deadline {deadline_s:.0f}s)")
    return TrainConfig(**{**cfg.to_dict(), "time_budget_s": budget})


def _n_params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def train(cfg: TrainConfig, out: Path, results: Path, device_name: str, workers: int,
          init_from: Path | None = None, vae_from: Path | None = None, clip_dir: Path = DEMO_CLIP_DIR,
          deadline_s: float = 0.0) -> dict:
    """Render, train (VAE, then U-Net), save the pipeline to `out` and the record to `results`."""
    import torch
    from transformers import CLIPTokenizer

    from training.demo_models.tokenizer import write_clip_tokenizer

    t_start = time.time()
    results.mkdir(parents=True, exist_ok=True)
    log, log_file = open_log(results)
    device = torch.device(device_name)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    configs = arch_configs(cfg.arch)
    images_np, scenes = render_train_set(cfg.n_train, cfg.seed, workers)
    log(f"rendered {len(scenes)} train scenes in {time.time() - t_start:.0f}s")
    images = torch.from_numpy(images_np).to(device)
    t_vae = time.time()
    vae, text_encoder, unet, vae_curve, lat_mean, lat_std = _models(
        cfg, configs, images, device, log, init_from, vae_from, clip_dir)
    scaling = float(vae.config.scaling_factor)
    recon = vae_recon_check(vae, min(200, cfg.n_train), device)
    log(f"vae: scaling_factor {scaling:.4f}, recon check {recon}, {time.time() - t_vae:.0f}s")
    del images
    max_length = int(text_encoder.config.max_position_embeddings)
    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(results / ".tokenizer", max_length=max_length))
    shutil.rmtree(results / ".tokenizer")
    table = CaptionTable(scenes, tok, device, extra=bool(cfg.extra_phrasings))
    log(f"{table.n_unique} distinct captions; text encoder {cfg.text_encoder}"
        + (f" (demo CLIP, {cfg.clip_layer} layer, frozen)" if cfg.text_encoder == "clip" else ""))
    (results / "hparams.json").write_text(json.dumps(
        {"train": cfg.to_dict(), "deadline_s": deadline_s, "init_from": str(init_from) if init_from else None,
         "vae_from": str(vae_from) if vae_from else None, "vae": dict(vae.config), "unet": dict(unet.config),
         "text_encoder": text_encoder.config.to_diff_dict(), "scheduler": SCHEDULER_CONFIG},
        indent=2, default=str) + "\n")
    run_cfg = _unet_budget(cfg, deadline_s, t_start, log)
    t_unet = time.time()
    with StopFlag() as stop:
        sampler = SceneSampler(scenes, device)
        unet_curve = train_unet(unet, text_encoder, lat_mean, lat_std, table, sampler, scaling, run_cfg, device, log, stop)
    unet_s = time.time() - t_unet
    save_pipeline(out, vae, text_encoder, unet)
    _write_curve(results / "vae_curve.csv", vae_curve)
    _write_curve(results / "unet_curve.csv", unet_curve)
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "n_params_m": {"vae": _n_params(vae), "text_encoder": _n_params(text_encoder), "unet": _n_params(unet)},
        "text_encoder": cfg.text_encoder + (f" (demo CLIP, {cfg.clip_layer}, frozen)" if cfg.text_encoder == "clip" else ""),
        "size": dir_size_mb(out),
        "scaling_factor": scaling,
        "vae_recon_check": recon,
        "vae_final": vae_curve[-1] if vae_curve else None,
        "init_from": str(init_from) if init_from else None,
        "vae_from": str(vae_from) if vae_from else None,
        "distinct_captions": table.n_unique,
        "stopped_by_signal": stop.set,
        "unet_steps": unet_curve[-1]["step"] if unet_curve else 0,
        "unet_final_loss": unet_curve[-1]["loss"] if unet_curve else None,
        "time_s": {"total": time.time() - t_start, "unet": unet_s},
    }
    (results / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"saved {out} ({summary['size']['total_mb']} MB)")
    log_file.close()
    return summary


CHOICES = {"arch": ("base", "wide", "tiny"), "text_encoder": ("train", "clip"), "clip_layer": ("penultimate", "last")}


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("discff_cli/assets/demo/diffusion"))
    p.add_argument("--results", type=Path, default=Path("docs/results/diffusion"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue training a saved model (VAE frozen); e.g. the bundled one, with a bigger batch")
    p.add_argument("--vae-from", type=Path, default=None,
                   help="take a saved model's VAE (frozen, with its scaling_factor) instead of training one")
    p.add_argument("--clip-dir", type=Path, default=DEMO_CLIP_DIR,
                   help="open_clip directory whose text tower --text-encoder clip uses (default: the demo CLIP)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of U-Net training (0 = use --unet-steps)")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="seconds for the whole run, rendering and saving included; U-Net training stops in time to save")
    for name, val in TrainConfig().to_dict().items():
        if name == "time_budget_s":
            continue
        p.add_argument("--" + name.replace("_", "-"), type=type(val), default=val, choices=CHOICES.get(name))
    args = p.parse_args(argv)
    fields = {k: getattr(args, k) for k in TrainConfig().to_dict() if k != "time_budget_s"}
    cfg = TrainConfig(**fields, time_budget_s=args.time_budget or 0.0)
    return cfg, args


def main(argv=None) -> None:
    cfg, args = parse_args(argv)
    train(cfg, args.out, args.results, args.device, args.workers, args.init_from, args.vae_from, args.clip_dir,
          args.deadline)


if __name__ == "__main__":
    main()
