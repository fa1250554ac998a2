"""The paper's few-shot baseline "CLIP (fine-tuning)": CLIP with only its last layer tuned.

    python -m training.demo_models.clip_lastlayer FEWSHOT.jsonl --clip demo --out DIR [--epochs 30] [--lr 1e-3]
        [--batch-size 32] [--margin 0.2] [--val-fraction 0.05] [--negatives-per-line 3] [--seed 0]
        [--device auto]

What is trained: exactly two tensors, the final linear projection of each tower into the shared
embedding space -- open_clip's `visual.proj` (image width -> embed_dim) and `text_projection`
(text width -> embed_dim), both bias-free matrices (64x64 in the demo model). Every other
parameter has requires_grad False and is saved unchanged.

Why this is the baseline: Discffusion's paper compares its few-shot prompt tuning with "CLIP
(fine-tuning): we fine-tune the CLIP model, adjusting only the last layer". In a dual encoder the
last layer of each tower is that projection; tuning both lets the few shots re-weight which
features decide a match without the capacity to overfit a whole encoder on a few hundred lines.

Why the features are precomputed: with everything below the projections frozen, their inputs
never change, so each image and text is encoded once and an epoch is a few small matrix products.

Same data and objective as `discff tune`, so the two are comparable line for line: the same JSONL
reader, the same held-out lines (`tune_data.tuning_split`, same --seed and --val-fraction), the
same per-epoch triplets (`tune_data.epoch_batches`) and the same margin triplet loss
max(0, s(neg) - s(pos) + M), where s is the cosine similarity of the projected, L2-normalised
embeddings. AdamW; the held-out triplets are scored before training (epoch 0, the source model) and
after every epoch, and the best epoch (accuracy, then loss) is kept -- the source's projections
when no epoch beats them. With nothing held out (a tiny file) the last epoch is kept.

DIR is an ordinary OpenCLIP directory (open_clip_config.json copied from the source, and
open_clip_model.safetensors holding the full float32 state dict), so `--clip DIR` works in every
discff command, plus finetune.json: source model and fingerprint, trained parameters, config and
the validation curve.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from discff_cli.errors import DiscffError
from training.tune import data as td
from training.tune import triplet_loss

TRAINED = ("visual.proj", "text_projection")
SUMMARY_FILE = "finetune.json"


@dataclass(frozen=True)
class LastLayerConfig:
    """Hyper-parameters of one run (recorded in finetune.json)."""

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32          # triplets per optimisation step
    margin: float = 0.2
    val_fraction: float = 0.05
    negatives_per_line: int = 3   # stated triplets drawn per line and epoch; 0 = all of them
    seed: int = 0


# ----------------------------------------------------------------------------- the last layer


def trainable_projections(model) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze `visual.proj` and `text_projection`; returns those two."""
    params = dict(model.named_parameters())
    missing = [name for name in TRAINED if name not in params or params[name].dim() != 2]
    if missing:
        raise DiscffError(f"This CLIP has no projection matrix {', '.join(missing)}: only OpenCLIP models with a "
                          "ViT image tower and the built-in text transformer have the last layer this baseline tunes.")
    for param in params.values():
        param.requires_grad_(False)
    for name in TRAINED:
        params[name].requires_grad_(True)
    return [params[name] for name in TRAINED]


@contextmanager
def projections_removed(model) -> Iterator[None]:
    """open_clip skips a projection that is None, so the towers return what feeds the last layer."""
    saved = model.visual.proj, model.text_projection
    model.visual.proj, model.text_projection = None, None
    try:
        yield
    finally:
        model.visual.proj, model.text_projection = saved


class FrozenFeatures:
    """Every image and text of the file, encoded once up to (not including) the projections."""

    def __init__(self, clip, examples: list[td.Example], batch_size: int = 256) -> None:
        images = sorted({e.image for e in examples} | {p for e in examples for p in e.negative_images})
        texts = sorted({e.text for e in examples} | {t for e in examples for t in e.negative_texts})
        self.image_row = {p: i for i, p in enumerate(images)}
        self.text_row = {t: i for i, t in enumerate(texts)}
        with torch.no_grad(), projections_removed(clip.model):  # not inference_mode: autograd uses these
            self.images = _batched(images, batch_size, lambda chunk: _image_features(clip, chunk))
            self.texts = _batched(texts, batch_size, lambda chunk: clip.model.encode_text(
                clip.tokenizer(chunk).to(clip.device)).float())

    def similarities(self, pairs: list[tuple[str, str]], image_proj: torch.Tensor,
                     text_proj: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each (image, text) pair after the given projections."""
        img = self.images[[self.image_row[i] for i, _ in pairs]] @ image_proj
        txt = self.texts[[self.text_row[t] for _, t in pairs]] @ text_proj
        return torch.nn.functional.cosine_similarity(img, txt, dim=-1)


def _image_features(clip, paths: list[str]) -> torch.Tensor:
    from index.imageio import open_rgb

    pixels = torch.stack([clip.preprocess(open_rgb(p)) for p in paths]).to(clip.device)
    return clip.model.encode_image(pixels).float()


def _batched(items: list, size: int, encode: Callable[[list], torch.Tensor]) -> torch.Tensor:
    return torch.cat([encode(items[i:i + size]) for i in range(0, len(items), size)])


# ----------------------------------------------------------------------------- data


def few_shot_data(path: str | Path, config: LastLayerConfig) -> td.TuningSplit:
    """The lines to train on and the held-out triplets, chosen exactly as `discff tune` chooses them."""
    return td.tuning_split(path, config.val_fraction, config.seed, config.negatives_per_line)


def epoch_batches(data: td.TuningSplit, config: LastLayerConfig, epoch: int) -> list[list[td.Triplet]]:
    """The batches of one 0-based epoch, exactly those `discff tune` draws for that epoch."""
    return td.epoch_batches(data.train, config.seed, epoch, config.negatives_per_line, config.batch_size)


# ----------------------------------------------------------------------------- training


def batch_loss(features: FrozenFeatures, batch: list[td.Triplet], projections: list[torch.Tensor],
               margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean triplet loss, per-triplet s(pos) > s(neg)) for a list of triplets."""
    pairs = [(t.image, t.text) for t in batch] + [t.negative_pair for t in batch]
    scores = features.similarities(pairs, *projections)
    pos, neg = scores[:len(batch)], scores[len(batch):]
    return triplet_loss(pos, neg, margin), pos > neg


def validate(features: FrozenFeatures, data: td.TuningSplit, projections: list[torch.Tensor],
             margin: float) -> tuple[float | None, float | None]:
    if not data.val_triplets:
        return None, None
    with torch.no_grad():
        loss, correct = batch_loss(features, data.val_triplets, projections, margin)
    return float(correct.float().mean()), float(loss)


@contextmanager
def one_thread() -> Iterator[None]:
    """An epoch is hundreds of tiny matrix products: a second intra-op thread only waits, and on a
    2-core machine shared with another job it made epochs 100x slower (8.6 s instead of 0.09 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(clip, data: td.TuningSplit, config: LastLayerConfig,
          report: Callable[[dict], None] = lambda point: None) -> dict:
    """Tune the projections in place; leaves the best epoch's (or, with nothing held out, the last) in the model."""
    projections = trainable_projections(clip.model)
    features = FrozenFeatures(clip, data.examples)
    optimizer = torch.optim.AdamW(projections, lr=config.lr, weight_decay=config.weight_decay)
    curve, best = [], None
    with one_thread():
        for epoch in range(config.epochs + 1):
            start = time.monotonic()
            train_loss = _one_epoch(features, data, config, projections, optimizer, epoch - 1) if epoch else None
            acc, loss = validate(features, data, projections, config.margin)
            point = {"epoch": epoch, "train_loss": train_loss, "val_accuracy": acc, "val_loss": loss,
                     "seconds": round(time.monotonic() - start, 3)}
            curve.append(point)
            report(point)
            if best is None or acc is None or (acc, -loss) > (best["val_accuracy"], -best["val_loss"]):
                best = {**point, "tensors": [p.detach().clone() for p in projections]}
    with torch.no_grad():
        for param, tensor in zip(projections, best["tensors"]):
            param.copy_(tensor)
    return {"curve": curve, "best_epoch": best["epoch"], "n_val_triplets": len(data.val_triplets),
            "n_train_triplets": sum(map(len, epoch_batches(data, config, 0))), "val_lines": data.val_lines}


def _one_epoch(features: FrozenFeatures, data: td.TuningSplit, config: LastLayerConfig,
               projections: list[torch.Tensor], optimizer: torch.optim.Optimizer, epoch: int) -> float:
    losses = []
    for batch in epoch_batches(data, config, epoch):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = batch_loss(features, batch, projections, config.margin)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return sum(losses) / max(1, len(losses))


# ----------------------------------------------------------------------------- files


def source_config(spec: str) -> Path:
    """The open_clip_config.json to copy: the tuned model must be a local directory like its source."""
    from discff_cli.clip_resolve import resolve_clip
    from index.clip_model import CONFIG_FILE

    path = Path(resolve_clip(spec)).expanduser()
    config = path / CONFIG_FILE if path.is_dir() else path.parent / CONFIG_FILE
    if not path.exists() or not config.is_file():
        raise DiscffError(f"--clip '{spec}' must be 'demo' or a local OpenCLIP directory (with {CONFIG_FILE}): "
                          "the tuned model is written as one, with the source's config.")
    return config


def write_model(out: Path, clip, config_file: Path, summary: dict) -> dict:
    """open_clip_config.json (a copy), the full float32 state dict, and finetune.json (returned, with
    the tuned weights' fingerprint, which `discff eval` and index manifests report)."""
    from safetensors.torch import save_file

    from index.clip_model import CONFIG_FILE, WEIGHTS_FILE, weights_fingerprint

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, out / CONFIG_FILE)
    state = {k: v.detach().float().cpu().contiguous() for k, v in clip.model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    summary = {**summary, "fingerprint": weights_fingerprint(state)}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(train_file: str | Path, clip_spec: str, out: str | Path, config: LastLayerConfig,
        device: str = "auto", report: Callable[[dict], None] = lambda point: None) -> dict:
    """Read, tune, write; returns what finetune.json records."""
    from discff_cli.clip_resolve import load_clip_cli

    start, out = time.monotonic(), Path(out)
    config_file = source_config(clip_spec)
    if out.resolve() == config_file.parent.resolve():
        raise DiscffError(f"--out '{out}' is the source model's directory; choose another so the source is kept.")
    data = few_shot_data(train_file, config)
    clip = load_clip_cli(clip_spec, device=device)
    result = train(clip, data, config, report)
    summary = {"source": clip_spec, "source_path": str(config_file.parent.resolve()),
               "source_fingerprint": clip.fingerprint,
               "trained_parameters": {n: list(p.shape) for n, p in clip.model.named_parameters() if p.requires_grad},
               "config": asdict(config), "train_file": str(train_file), "train_digest": td.file_digest(train_file),
               **result, "wall_s": round(time.monotonic() - start, 2)}
    return write_model(out, clip, config_file, summary)


# ----------------------------------------------------------------------------- CLI


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_epoch(point: dict, epochs: int) -> None:
    label = "source model" if point["epoch"] == 0 else f"train loss {_fmt(point['train_loss'])}"
    print(f"epoch {point['epoch']:>3}/{epochs}  {label:<18}  val accuracy {_fmt(point['val_accuracy'])}  "
          f"val loss {_fmt(point['val_loss'])}  {point['seconds']:.2f} s", flush=True)


def print_summary(summary: dict, out: Path) -> None:
    best = summary["curve"][summary["best_epoch"]]
    source = summary["curve"][0]
    kept = " (no epoch beat the source model: its projections are kept)" if best["epoch"] == 0 else ""
    print(f"best epoch {best['epoch']}{kept}: val accuracy {_fmt(best['val_accuracy'])} (source model "
          f"{_fmt(source['val_accuracy'])}) on {summary['n_val_triplets']} held-out triplets of "
          f"{len(summary['val_lines'])} lines; {summary['n_train_triplets']} training triplets per epoch; trained "
          f"{', '.join(summary['trained_parameters'])}; wrote {out} in {summary['wall_s']:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.demo_models.clip_lastlayer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="few-shot JSONL, the format `discff tune` reads")
    parser.add_argument("--clip", default="demo", help="source OpenCLIP: 'demo' or a local directory")
    parser.add_argument("--out", required=True, type=Path, help="directory for the tuned OpenCLIP model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    for name, value in asdict(LastLayerConfig()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = vars(parse_args(argv))
    file, clip, out, device = (args.pop(k) for k in ("file", "clip", "out", "device"))
    config = LastLayerConfig(**args)
    try:
        summary = run(file, clip, out, config, device, lambda point: print_epoch(point, config.epochs))
    except DiscffError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print_summary(summary, out)


if __name__ == "__main__":
    main()
