"""Teach the bundled demo diffusion model composition, on a 2-core CPU, in runs that resume.

Why this recipe: the bundled model draws single objects right (99.6%) but scores every swap
at chance, and a CPU sees only ~0.2-0.5M samples in five hours -- far too few to learn binding
from scratch (the H100 run saw 1.5M and did not). So the budget goes to the missing skill only:

- warm start from the bundled model (U-Net and its jointly trained text encoder);
- batches mostly of two-object scenes, the only ones where binding and relations exist;
- a hard-negative term on top of the usual denoising loss: for each two-object scene, the same
  noisy latent is also denoised under one aligned hard negative of the world (colours swapped,
  shapes swapped, or the relation reversed; the perpendicular relations now and then), and a
  hinge on log-errors asks the true caption to predict the noise better than the negative by
  a margin. That is the DiffusionITM recipe (HardNeg, Krojer et al. 2023) on the world's exact
  negatives; it trains the very quantity the product's `denoise` score reads;
- part of each batch noised the way the scores read an image (noise scaled by an ensemble level
  s < 1, target s*eps), so what is learned is what the reranker sees.

Everything here is training-time only: the result is an ordinary diffusers Stable Diffusion
directory (`save_pipeline`) that the engine loads exactly as it loads SD 2.1.

Checkpoints (U-Net, text encoder, EMA, AdamW, every RNG, step, curve position) are written
atomically every --ckpt-every seconds; a killed run resumes from the last one with
`--run DIR` again. Every --eval-every seconds the EMA model is saved and scored with the
product's own `discff eval --score denoise` on held-out val scenes (attribute/relation/shape
swaps and their Winoground items); the curve goes to --results.

    nice -n 19 python -m training.demo_models.finetune_composition --run /tmp/comp --results docs/results/diffusion/composition
    python -m training.demo_models.finetune_composition --run /tmp/comp --export discff_cli/assets/demo/diffusion
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from training.demo_models.train_diffusion import StopFlag, open_log, load_models, render_train_set, save_pipeline

BUNDLED = Path(__file__).resolve().parents[2] / "discff_cli" / "assets" / "demo" / "diffusion"
SWAPS = ("attribute_swap", "shape_swap", "relation_swap")


@dataclass
class CompositionConfig:
    """Hyper-parameters of a composition fine-tune; written to results/hparams.json."""

    seed: int = 0
    n_train: int = 40_000          # train-split scenes rendered once (the world is complete and balanced)
    batch: int = 32                # scenes per step; each two-object scene adds one negative pass
    unet_lr: float = 2e-4
    text_lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: int = 50
    ema_decay: float = 0.995       # few steps on a CPU: a short EMA horizon (~200 steps)
    caption_dropout: float = 0.1   # keeps the empty-prompt prediction the scores normalise by
    two_object_weight: float = 0.8
    hn_weight: float = 1.0         # weight of the hard-negative hinge
    hn_margin: float = 0.05        # margin on log(e_neg) - log(e_pos)
    perpendicular: float = 0.25    # share of relation negatives using a perpendicular relation
    level_share: float = 0.5       # share of samples noised at an ensemble level s < 1, as the scores do
    levels: str = "0.2,0.4,0.6,0.8"
    channels_last: bool = True     # ~12% faster on this CPU

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- captions


def pick_pair(scene, rng: random.Random, cfg: CompositionConfig) -> tuple[str, str | None, str | None]:
    """(true caption, aligned hard negative or None, its tag) for one scene."""
    from training.world import captions, hard_negatives

    caps = captions(scene)
    j = rng.randrange(len(caps))
    if len(scene.objects) < 2:
        return caps[j], None, None
    tag = rng.choice(SWAPS)
    negs = hard_negatives(scene)[tag]
    if tag == "relation_swap" and rng.random() < cfg.perpendicular:
        j_neg = len(caps) * (1 + rng.randrange(2)) + j   # a perpendicular relation, same template
        return caps[j], negs[j_neg], tag
    return caps[j], negs[j], tag


class Tokens:
    """Token ids per caption, cached: the world has a few thousand distinct captions."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict = {}

    def __call__(self, texts: list[str]):
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self.cache.update(zip(missing, ids))
        return torch.stack([self.cache[t] for t in texts])


# ----------------------------------------------------------------------------- state


class Run:
    """Models, optimiser, EMA and RNGs of one run, and their atomic checkpoint."""

    def __init__(self, cfg: CompositionConfig, init_from: Path, run_dir: Path, device) -> None:
        import torch

        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.vae, self.text_encoder, self.unet = load_models(init_from, device)
        if cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.unet.train()
        self.text_encoder.train()
        groups = [{"params": list(self.unet.parameters()), "lr": cfg.unet_lr, "base_lr": cfg.unet_lr},
                  {"params": list(self.text_encoder.parameters()), "lr": cfg.text_lr, "base_lr": cfg.text_lr}]
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=device.type != "cuda",
                                     fused=device.type == "cuda")
        self.ema = [p.detach().clone() for p in self.params]
        self.gen = torch.Generator(device).manual_seed(cfg.seed + 7)
        self.rng = random.Random(cfg.seed + 11)
        self.step, self.samples, self.seconds = 0, 0, 0.0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "ckpt.pt"

    def save(self) -> None:
        import torch

        state = {"unet": self.unet.state_dict(), "text": self.text_encoder.state_dict(), "ema": self.ema,
                 "opt": self.opt.state_dict(), "gen": self.gen.get_state(), "rng": self.rng.getstate(),
                 "torch_rng": torch.get_rng_state(), "step": self.step, "samples": self.samples,
                 "seconds": self.seconds, "config": self.cfg.to_dict()}
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)

    def load(self) -> bool:
        import torch

        if not self.ckpt_path.exists():
            return False
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        if state["config"] != self.cfg.to_dict():
            raise SystemExit(f"{self.ckpt_path} was made with another configuration; use a new --run")
        self.unet.load_state_dict(state["unet"])
        self.text_encoder.load_state_dict(state["text"])
        for e, saved in zip(self.ema, state["ema"]):
            e.copy_(saved)
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.samples, self.seconds = state["step"], state["samples"], state["seconds"]
        return True

    def ema_models(self):
        """Copies of the U-Net and text encoder carrying the EMA weights (the model that ships)."""
        import torch

        unet, text = copy.deepcopy(self.unet), copy.deepcopy(self.text_encoder)
        with torch.no_grad():
            for p, e in zip(list(unet.parameters()) + list(text.parameters()), self.ema):
                p.copy_(e)
        return unet.eval().to(memory_format=torch.contiguous_format), text.eval()


# ----------------------------------------------------------------------------- one step


def train_step(run: Run, data: "Data", cfg: CompositionConfig) -> dict:
    """One AdamW step on denoising + hard-negative hinge; returns the step's readings."""
    import torch

    idx = data.draw(cfg.batch, cfg.two_object_weight, run.gen)
    pos, neg, tags, neg_rows = [], [], [], []
    for row, i in enumerate(idx.tolist()):
        true, false, tag = pick_pair(data.scenes[i], run.rng, cfg)
        if run.rng.random() < cfg.caption_dropout:
            true, false = "", None
        pos.append(true)
        if false is not None:
            neg.append(false)
            tags.append(tag)
            neg_rows.append(row)
    dev, gen = run.device, run.gen
    z = (data.lat_mean[idx] + data.lat_std[idx] * torch.randn(data.lat_mean[idx].shape, generator=gen, device=dev))
    z = z * data.scaling
    b = len(idx)
    t = torch.randint(0, data.ac.numel(), (b,), generator=gen, device=dev)
    noise = torch.randn(z.shape, generator=gen, device=dev)
    level = data.levels[torch.randint(len(data.levels), (b,), generator=gen, device=dev)]
    share = torch.rand(b, generator=gen, device=dev) < cfg.level_share
    s = torch.where(share, level, torch.ones(b, device=dev)).view(-1, 1, 1, 1)
    a = data.ac[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z + (1 - a).sqrt() * s * noise
    target = s * noise
    rows = torch.tensor(neg_rows, dtype=torch.long, device=dev)
    zt_all, t_all, target_all = torch.cat([zt, zt[rows]]), torch.cat([t, t[rows]]), torch.cat([target, target[rows]])
    if cfg.channels_last:
        zt_all = zt_all.contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        enc = run.text_encoder(data.tokens(pos + neg).to(dev))[0]
        pred = run.unet(zt_all, t_all, enc).sample
    err = ((pred.float() - target_all) ** 2).mean(dim=(1, 2, 3))
    loss_mse = err[:b].mean()
    gap = torch.log(err[b:]) - torch.log(err[rows])        # > 0: the true caption denoises better
    loss_hn = torch.relu(cfg.hn_margin - gap).mean() if len(neg_rows) else torch.zeros(())
    loss = loss_mse + cfg.hn_weight * loss_hn
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.opt.step()
    decay = min(cfg.ema_decay, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        torch._foreach_lerp_(run.ema, [p.detach() for p in run.params], 1 - decay)
    right = (gap > 0).tolist()
    return {"loss": loss_mse.item(), "hn": loss_hn.item(), "passes": b + len(neg_rows),
            **{tag: [r for r, tg in zip(right, tags) if tg == tag] for tag in SWAPS}}


def cached_latents(cfg: CompositionConfig, run: "Run", workers: int):
    """Scenes and their VAE posteriors, kept in the run folder: a resumed run neither renders nor encodes again."""
    import torch

    from training.demo_models.train_diffusion import encode_all

    path = run.run_dir / f"train_latents_{cfg.seed}_{cfg.n_train}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=False)
        return saved["scenes"], saved["mean"], saved["std"]
    images, scenes = render_train_set(cfg.n_train, cfg.seed, workers)
    mean, std = encode_all(run.vae, torch.from_numpy(images), run.device, batch=256)
    tmp = path.with_suffix(".tmp")
    torch.save({"scenes": scenes, "mean": mean, "std": std}, tmp)
    os.replace(tmp, path)
    return scenes, mean, std


class Data:
    """The rendered train scenes as VAE latents (posterior mean and std), plus what a step draws from."""

    def __init__(self, cfg: CompositionConfig, run: Run, workers: int, log) -> None:
        import torch
        from diffusers import DDPMScheduler
        from transformers import CLIPTokenizer

        from training.demo_models.diffusion_model_configs import SCHEDULER_CONFIG
        from training.demo_models.train_diffusion import SceneSampler

        t0 = time.time()
        self.scenes, self.lat_mean, self.lat_std = cached_latents(cfg, run, workers)
        log(f"rendered and encoded {len(self.scenes)} train scenes in {time.time() - t0:.0f}s")
        self.scaling = float(run.vae.config.scaling_factor)
        sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
        self.ac = sched.alphas_cumprod.float().to(run.device)
        self.levels = torch.tensor([float(x) for x in cfg.levels.split(",")], device=run.device)
        self.tokens = Tokens(CLIPTokenizer.from_pretrained(str(BUNDLED / "tokenizer")))
        self.sampler = SceneSampler(self.scenes, run.device)

    def draw(self, batch: int, p_two: float, gen):
        return self.sampler.draw(batch, p_two, gen)


# ----------------------------------------------------------------------------- the held-out curve


def export_proxy(dir_: Path, n_per_tag: int) -> Path:
    """Val-split swap items and their Winoground pairs as one eval JSONL (made once per run)."""
    from training.world.export import export_eval

    out = dir_ / "proxy.jsonl"
    if not out.exists():
        export_eval(dir_, n_per_tag, split="val")
        lines = [(dir_ / f"{tag}.jsonl").read_text() for tag in (*SWAPS, "winoground")]
        out.write_text("".join(lines))
    return out


def proxy_eval(model_dir: Path, proxy: Path, steps: int, levels: str) -> dict:
    """The product's own `discff eval --score denoise` on the val swaps: accuracy and Winoground text."""
    cmd = [sys.executable, "-m", "discff_cli", "eval", str(proxy), "--model", str(model_dir), "--no-clip",
           "--score", "denoise", "--steps", str(steps), "--levels", levels, "--device", "auto", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return summarise_eval(json.loads(out))


def summarise_eval(doc: dict) -> dict:
    """Flatten `discff eval --json` into {tag/metric: value} for the denoise column."""
    return {f"{row['tag']}/{row['metric']}": row["denoise"]["value"] for row in doc["rows"]
            if row["metric"] in ("accuracy", "text") and "denoise" in row}


# ----------------------------------------------------------------------------- the loop


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _truncate_csv(path: Path, step: int) -> None:
    """Drop curve rows past the checkpoint a resumed run restarts from (they will be re-made)."""
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(r["step"]) <= step]
    if len(keep) != len(rows):
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)


def save_ema_pipeline(run: Run, out: Path) -> None:
    unet, text = run.ema_models()
    save_pipeline(out, copy.deepcopy(run.vae), text, unet)


def train(cfg: CompositionConfig, run_dir: Path, results: Path, init_from: Path, hours: float,
          ckpt_every: float, eval_every: float, eval_n: int, eval_steps: int, workers: int, threads: int = 1,
          device: str = "cpu", eval_levels: str = "0.5") -> None:
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    log, _ = open_log(results, "a", "%Y-%m-%d %H:%M:%S")
    run = Run(cfg, init_from, run_dir, torch.device(device))
    resumed = run.load()
    log(f"{'resumed at step ' + str(run.step) if resumed else 'new run from ' + str(init_from)}; config {cfg.to_dict()}")
    (results / "hparams.json").write_text(json.dumps({"config": cfg.to_dict(), "init_from": str(init_from)}, indent=2) + "\n")
    for name in ("curve.csv", "proxy_curve.csv"):
        _truncate_csv(results / name, run.step)
    data = Data(cfg, run, workers, log)
    proxy = export_proxy(run_dir / "proxy", eval_n)
    if not resumed:
        _record_proxy(run, init_from, proxy, eval_steps, eval_levels, results, log)
    t_start, last_ckpt, last_eval = time.time(), time.time(), time.time()
    acc: list[dict] = []
    with StopFlag() as stop:
        while not stop.set and (hours <= 0 or time.time() - t_start < hours * 3600):
            t0 = time.time()
            acc.append(train_step(run, data, cfg))
            run.step += 1
            run.samples += acc[-1]["passes"]
            run.seconds += time.time() - t0
            if run.step % 20 == 0:
                _record_curve(run, acc, results, log)
                acc = []
            if time.time() - last_ckpt > ckpt_every:
                run.save()
                last_ckpt = time.time()
            if time.time() - last_eval > eval_every:
                run.save()
                save_ema_pipeline(run, run_dir / "ema_model")
                _record_proxy(run, run_dir / "ema_model", proxy, eval_steps, eval_levels, results, log)
                last_eval = time.time()
    run.save()
    save_ema_pipeline(run, run_dir / "ema_model")
    log(f"stopped at step {run.step} ({run.samples} U-Net samples, {run.seconds / 3600:.2f} h of steps); checkpoint saved")


def _record_curve(run: Run, acc: list[dict], results: Path, log) -> None:
    row = {"step": run.step, "samples": run.samples, "hours": round(run.seconds / 3600, 4),
           "loss": round(float(np.mean([a["loss"] for a in acc])), 5),
           "hn_loss": round(float(np.mean([a["hn"] for a in acc])), 5)}
    for tag in SWAPS:
        right = [r for a in acc for r in a[tag]]
        row[f"train_{tag}"] = round(float(np.mean(right)), 3) if right else ""
    row["samples_per_s"] = round(sum(a["passes"] for a in acc) / max(1e-9, run.seconds - _record_curve.last), 2) \
        if _record_curve.last else ""
    _record_curve.last = run.seconds
    _append_csv(results / "curve.csv", row)
    log(" ".join(f"{k} {v}" for k, v in row.items()))


_record_curve.last = 0.0


def _record_proxy(run: Run, model_dir: Path, proxy: Path, steps: int, levels: str, results: Path, log) -> None:
    t0 = time.time()
    try:
        flat = proxy_eval(model_dir, proxy, steps, levels)
    except subprocess.CalledProcessError as exc:
        log(f"proxy eval failed: {exc.stderr.strip()[-500:]}")
        return
    row = {"step": run.step, "samples": run.samples, "hours": round(run.seconds / 3600, 4), **flat}
    _append_csv(results / "proxy_curve.csv", row)
    log(f"proxy ({time.time() - t0:.0f}s): " + " ".join(f"{k} {v}" for k, v in flat.items()))


def parse_args(argv=None) -> tuple[CompositionConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="checkpoint folder (resumed when it holds one)")
    p.add_argument("--results", type=Path, default=Path("docs/results/diffusion/composition"))
    p.add_argument("--init-from", type=Path, default=BUNDLED)
    p.add_argument("--hours", type=float, default=0.0, help="stop after this many hours of this process (0 = until killed)")
    p.add_argument("--ckpt-every", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--eval-every", type=float, default=1200.0, help="seconds between held-out proxy evals")
    p.add_argument("--eval-n", type=int, default=40, help="val items per swap tag in the proxy")
    p.add_argument("--eval-steps", type=int, default=5, help="DDIM steps of the proxy's denoise score")
    p.add_argument("--eval-levels", default="0.5", help="noise levels of the proxy's denoise score (the README eval grid)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 wastes least on a shared 2-core machine (no spinning at barriers)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda when a GPU is lent (the same recipe at a larger --batch)")
    p.add_argument("--export", type=Path, default=None, help="write the run's EMA model here and exit")
    for f in fields(CompositionConfig):
        default = getattr(CompositionConfig(), f.name)
        kind = (lambda v: v.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default)
    args = p.parse_args(argv)
    cfg = CompositionConfig(**{f.name: getattr(args, f.name) for f in fields(CompositionConfig)})
    return cfg, args


def main(argv=None) -> None:
    import torch

    cfg, args = parse_args(argv)
    if args.export is not None:
        run = Run(cfg, args.init_from, args.run, torch.device("cpu"))
        if not run.load():
            raise SystemExit(f"{args.run} holds no checkpoint")
        save_ema_pipeline(run, args.export)
        print(f"wrote {args.export} (EMA weights of step {run.step})")
        return
    train(cfg, args.run, args.results, args.init_from, args.hours, args.ckpt_every, args.eval_every,
          args.eval_n, args.eval_steps, args.workers, args.threads, args.device, args.eval_levels)


if __name__ == "__main__":
    main()
