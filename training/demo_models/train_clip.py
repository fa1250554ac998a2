"""Train the demo OpenCLIP model on the demo world (CPU, minutes), seeded and re-runnable.

    python -m training.demo_models.train_clip [--steps 320] [--out discff_cli/assets/demo/clip]

What and why:
- A custom small open_clip config: a ViT at 64x64 (patch 8, so relations are visible as
  patch positions) and a text transformer that uses open_clip's standard tokenizer (vocab
  49408, context 16 -- world captions are <= 12 tokens), so it loads with `local-dir:` like
  any OpenCLIP model and `--clip demo` needs no special code.
- Contrastive loss with *hard negatives in the batch*: each image also competes against the
  world's false captions of its own scene (colour swap, shape swap, reversed relation, a
  replaced attribute), in the same template as its true caption. Without them a small CLIP
  learns a bag of concepts and is at chance on the swap tags (the paper's point).
- Multi-positive targets: texts describing an equivalent scene (e.g. two red circles, or
  "A left of B" / "B right of A") are positives, not negatives.
- Weights are saved in float16 (the token embedding dominates: 49408 rows), ~8 MB.

Writes the model to --out and hyper-parameters, the training curve (CSV) and final metrics
(JSON) to --results.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training import world as w
from training.world.export import SINGLE_CAPTIONS, SWAP_TAGS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "discff_cli" / "assets" / "demo" / "clip"
DEFAULT_RESULTS = REPO / "training" / "results" / "clip"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Hparams:
    seed: int = 0
    n_train: int = 20000
    n_val: int = 400
    steps: int = 320
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 30
    eval_every: int = 40
    max_minutes: float = 90.0  # a safety cap only: the default run stops at `steps`, deterministic
    threads: int = 2
    embed_dim: int = 64
    vision_width: int = 64
    vision_layers: int = 3
    text_width: int = 64
    text_layers: int = 2
    context_length: int = 16
    init: str = ""  # a saved demo CLIP directory to continue from (a second stage); "" = random init


def model_config(hp: Hparams) -> dict:
    return {
        "embed_dim": hp.embed_dim,
        "vision_cfg": {"image_size": w.SIZE, "patch_size": 8, "width": hp.vision_width, "layers": hp.vision_layers,
                       "head_width": 32},
        "text_cfg": {"context_length": hp.context_length, "vocab_size": 49408, "width": hp.text_width, "heads": 4,
                     "layers": hp.text_layers},
    }


# ----------------------------------------------------------------------------- scene keys


def scene_key(scene: w.Scene) -> str:
    """What a caption can tell apart: colours, shapes and the relation, up to A-R-B == B-inv(R)-A."""
    if len(scene.objects) == 1:
        o = scene.objects[0]
        return f"{o.colour} {o.shape}"
    a, b = scene.objects
    rel = scene.relation
    if rel in ("right of", "below"):
        a, b, rel = b, a, w.INVERSE[rel]
    return f"{a.colour} {a.shape} {rel} {b.colour} {b.shape}"


def negative_scenes(scene: w.Scene, rng: random.Random, k: int = 4) -> list[w.Scene]:
    """Up to k false scenes whose captions are hard negatives for this scene."""
    if len(scene.objects) == 2:
        out = [w.swap_colours(scene), w.swap_shapes(scene), w.reverse_relation(scene)]
        out.append(rng.choice(w.replaced_attribute_scenes(scene)))
        return out
    return rng.sample(w.replaced_attribute_scenes(scene), k)


# ----------------------------------------------------------------------------- data


def to_tensor(images: list) -> "torch.Tensor":
    """PIL 64x64 images -> normalised float tensor, exactly what open_clip's preprocess yields at 64 px."""
    import torch

    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    arr = (arr - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


class Tokens:
    """Cached open_clip tokenisation (the world has a few thousand distinct captions)."""

    def __init__(self, context_length: int, tokenizer=None) -> None:
        import open_clip

        self.tok = tokenizer or open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
        self.cache: dict[str, "torch.Tensor"] = {}

    def __call__(self, texts: list[str]) -> "torch.Tensor":
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, row in zip(missing, self.tok(missing)):
                self.cache[t] = row
        return torch.stack([self.cache[t] for t in texts])


def make_batch(scenes: list[w.Scene], idx: list[int], rng: random.Random):
    """True captions (one random template each), hard negatives in the same template, and keys."""
    texts, keys, neg_texts, neg_keys = [], [], [], []
    for i in idx:
        scene = scenes[i]
        caps = w.captions(scene)
        j = rng.randrange(len(caps))
        texts.append(caps[j])
        keys.append(scene_key(scene))
        for neg in negative_scenes(scene, rng):
            neg_texts.append(w.captions(neg)[j])
            neg_keys.append(scene_key(neg))
    return texts, keys, neg_texts, neg_keys


def multi_positive_ce(logits, positive) -> "torch.Tensor":
    """-log of the softmax mass on the positives, averaged over rows."""
    import torch

    all_ = torch.logsumexp(logits, dim=1)
    pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (all_ - pos).mean()


# ----------------------------------------------------------------------------- evaluation


def evaluate(model, tokens: Tokens, examples: list[w.Example]) -> dict[str, float]:
    """Single-object R@1 (image -> the 12 colour-shape captions) and 2-way accuracy per swap tag."""
    import torch

    model.eval()
    out: dict[str, float] = {}
    with torch.inference_mode():
        singles = [e for e in examples if len(e.scene.objects) == 1]
        img = model.encode_image(to_tensor([e.image for e in singles]), normalize=True)
        txt = model.encode_text(tokens(SINGLE_CAPTIONS), normalize=True)
        pred = (img @ txt.T).argmax(1).numpy()
        truth = np.array([SINGLE_CAPTIONS.index(w.captions(e.scene)[0]) for e in singles])
        out["single_object_r1"] = float((pred == truth).mean())
        pairs = [e for e in examples if len(e.scene.objects) == 2]
        img = model.encode_image(to_tensor([e.image for e in pairs]), normalize=True)
        for tag in SWAP_TAGS:
            rng = random.Random(tag)
            trues, falses = [], []
            for e in pairs:
                j = rng.randrange(4)
                trues.append(w.captions(e.scene)[j])
                falses.append(w.hard_negatives(e.scene)[tag][j])
            t = model.encode_text(tokens(trues), normalize=True)
            f = model.encode_text(tokens(falses), normalize=True)
            out[tag] = float(((img * t).sum(1) > (img * f).sum(1)).float().mean())
    model.train()
    return out


# ----------------------------------------------------------------------------- training


def train(hp: Hparams, out_dir: Path, results_dir: Path) -> dict:
    import open_clip
    import torch

    from index.tiny_clip import save_clip

    torch.manual_seed(hp.seed)
    torch.set_num_threads(hp.threads)
    rng = random.Random(hp.seed)
    t0 = time.time()
    train_ex = w.make_split("train", hp.n_train, hp.seed)
    val_ex = w.make_split("val", hp.n_val, hp.seed)
    scenes = [e.scene for e in train_ex]
    pixels = to_tensor([e.image for e in train_ex])
    del train_ex
    print(f"data: {hp.n_train} train / {hp.n_val} val in {time.time() - t0:.0f}s", flush=True)

    cfg = model_config(hp)
    model = open_clip.model.CLIP(**cfg)
    if hp.init:
        _load_init(model, Path(hp.init))
    tokens = Tokens(hp.context_length)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < hp.warmup:
            return hp.lr * (step + 1) / hp.warmup
        return hp.lr * 0.5 * (1 + math.cos(math.pi * (step - hp.warmup) / max(1, hp.steps - hp.warmup)))

    curve: list[dict] = []
    order: list[int] = []
    t_train = time.time()
    step = 0
    for step in range(hp.steps):
        if len(order) < hp.batch_size:
            order += rng.sample(range(hp.n_train), hp.n_train)
        idx, order = order[:hp.batch_size], order[hp.batch_size:]
        texts, keys, neg_texts, neg_keys = make_batch(scenes, idx, rng)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        img = model.encode_image(pixels[idx], normalize=True)
        txt = model.encode_text(tokens(texts + neg_texts), normalize=True)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T
        all_keys = np.array(keys + neg_keys)
        positive = torch.from_numpy(np.array(keys)[:, None] == all_keys[None, :])
        b = len(idx)
        loss_i2t = multi_positive_ce(logits, positive)
        loss_t2i = multi_positive_ce(logits[:, :b].T, positive[:, :b].T)
        loss = (loss_i2t + loss_t2i) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        elapsed = time.time() - t_train
        if (step + 1) % hp.eval_every == 0 or step + 1 == hp.steps or elapsed > hp.max_minutes * 60:
            row = {"step": step + 1, "seconds": round(elapsed, 1), "loss": round(loss.item(), 4),
                   "logit_scale": round(scale.item(), 2), **{k: round(v, 4) for k, v in evaluate(model, tokens, val_ex).items()}}
            curve.append(row)
            print(json.dumps(row), flush=True)
        if elapsed > hp.max_minutes * 60:
            print(f"time budget reached at step {step + 1}", flush=True)
            break

    model.eval()
    half = open_clip.model.CLIP(**cfg)
    half.load_state_dict(model.state_dict())
    save_clip(half.half(), cfg, out_dir)
    final = _final_metrics(out_dir)
    final.update({"steps_run": step + 1, "train_seconds": round(time.time() - t_train, 1),
                  "weights_bytes": (out_dir / "open_clip_model.safetensors").stat().st_size})
    _write_results(results_dir, hp, curve, final)
    return final


def _load_init(model, folder: Path) -> None:
    """Continue from a saved stage: its float16 weights, cast to float32 (no optimizer state)."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "open_clip_model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})


def _final_metrics(out_dir: Path, n_test: int = 1000) -> dict:
    """Test-split metrics of the saved model, loaded back through the same loader `--clip demo` uses."""
    from index.clip_model import load_clip

    clip = load_clip(out_dir, device="cpu")
    tokens = Tokens(0, tokenizer=clip.tokenizer)
    test = w.make_split("test", n_test)
    metrics = evaluate(clip.model, tokens, test)
    metrics = {f"test_{k}": round(v, 4) for k, v in metrics.items()}
    metrics["test_items"] = {"single_object": sum(len(e.scene.objects) == 1 for e in test),
                             "two_objects": sum(len(e.scene.objects) == 2 for e in test)}
    metrics["fingerprint"] = clip.fingerprint
    return metrics


def _write_results(results_dir: Path, hp: Hparams, curve: list[dict], final: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "hparams.json").write_text(json.dumps(asdict(hp), indent=2) + "\n")
    with open(results_dir / "curve.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
    (results_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.demo_models.train_clip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, value in asdict(Hparams()).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = vars(parser.parse_args(argv))
    out, results = args.pop("out"), args.pop("results")
    final = train(Hparams(**args), out, results)
    print(json.dumps(final, indent=2))


if __name__ == "__main__":
    main()
