"""The few-shot tuning loop of `discff tune` (paper §4.5, docs/architecture.md "Tuning").

Only the prompt deltas p^k, p^v are trained (margin triplet loss, AdamW, grad-norm clip); every
step draws one random timestep and noise level; a held-out split of lines is scored each epoch
with the inference grid and the best deltas are kept. A checkpoint next to `--out` is written
every few steps and at each epoch end, so an interrupted run continues with `--resume` exactly
where it stopped (same batches, same random conditions).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from discff_cli.engine.scorer import Condition, Scorer
from discff_cli.errors import DiscffError
from training.tune import data as td
from discff_cli.engine.deltas import DELTAS_ON, SLOTS, attach_deltas, delta_tensors, load_delta_tensors, \
    save_deltas_file
from training.tune.head_weighting import HeadWeighting

CHECKPOINT_FORMAT = "discff-tune-checkpoint/1"


@dataclass(frozen=True)
class TuneConfig:
    """Hyper-parameters of one tuning run (saved in the deltas file and the checkpoint)."""

    epochs: int = 5
    batch_size: int = 8           # triplets per optimisation step
    seed: int = 0
    rank: int = 0                 # 0 = full-rank deltas (the paper's default)
    margin: float = 0.2           # M, in units of the score's zero-shot spread (see `Spread`)
    lr: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    negatives_per_line: int = 1   # stated triplets drawn per line and epoch after the hard ones; 0 = all of them
    hard_negatives: int = 3       # a line's first stated negatives (files list them hardest first), every epoch
    head_weighting: bool = True
    checkpoint_every: int = 20    # steps between resume checkpoints
    prompt_deltas: bool = True    # False: no deltas are trained (timestep weights alone)
    deltas_on: str = "kv"         # kv: the paper's p^k, p^v; qkvo: query and output projections too
    timestep_weights: bool = False  # fit per-condition weights after the deltas (training/timestep_weights.py)


@dataclass
class TuneState:
    """Everything a resumed run needs besides the deltas and the optimizer."""

    epoch: int = 0                # epoch in progress (0-based)
    step: int = 0                 # steps done in that epoch
    loss_sum: float = 0.0
    loss_count: int = 0
    curve: list[dict] = field(default_factory=list)
    best: dict | None = None      # {"epoch", "val_accuracy", "val_loss", "tensors"}
    spread: dict | None = None    # Spread.to_dict(), measured once before the first step


@dataclass
class TuneResult:
    out: Path
    curve: list[dict]
    best_epoch: int | None   # None when nothing was held out for validation
    n_train_triplets: int
    n_val_triplets: int
    wall_s: float
    interrupted: bool = False
    timestep_weights: dict | None = None  # training/timestep_weights.py report, with --timestep-weights


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".resume.pt")


class PairCache:
    """Latents and text states of every image and text in the file, encoded once, autograd-safe."""

    def __init__(self, scorer: Scorer, triplets: list[td.Triplet]) -> None:
        images = sorted({p for t in triplets for p in (t.image, t.neg_image) if p})
        texts = sorted({s for t in triplets for s in (t.text, t.neg_text) if s})
        self.image_index = {p: i for i, p in enumerate(images)}
        self.text_index = {s: i for i, s in enumerate(texts)}
        # The engine encodes under inference_mode; clones made here are ordinary tensors autograd accepts.
        self.latents = scorer.encode_images(images).clone()
        states, mask = scorer.encode_texts(texts)
        self.states, self.mask = states.clone(), mask.clone()

    def pairs(self, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = torch.tensor([self.image_index[i] for i, _ in pairs])
        txt = torch.tensor([self.text_index[t] for _, t in pairs])
        return self.latents[img], self.states[txt], self.mask[txt]


def random_condition(scorer: Scorer, rng: random.Random) -> Condition:
    """A timestep anywhere in the span of the inference grid, and one of its noise levels."""
    steps = [c.timestep for c in scorer.conditions]
    return Condition(0, rng.randint(min(steps), max(steps)), rng.choice(scorer.config.levels))


def triplet_loss(pos: torch.Tensor, neg: torch.Tensor, margin: float, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Eq. 6, averaged over the batch, on gaps in units of `scale`: max(0, (f(neg) − f(pos)) / scale + M)."""
    return torch.relu((neg - pos) / scale + margin).mean()


@dataclass(frozen=True)
class Spread:
    """How far apart f(pos) and f(neg) lie before tuning: the standard deviation of their gap on the
    grid's timesteps (`per_timestep`) and of the grid mean (`mean`).

    The paper's M = 0.2 was set for Eq. 4's logits; the error gaps are on other scales (a per-element
    MSE gap is ~1e-4, a plain-norm gap ~1, and both shrink at low noise), so a fixed margin is a
    different loss for every score and timestep. Dividing each gap by its zero-shot spread makes
    `--margin` mean the same for every family and keeps every timestep's gradient in proportion."""

    timesteps: tuple[int, ...]
    per_timestep: tuple[float, ...]
    mean: float

    def at(self, timestep: int) -> float:
        """The spread at any timestep, interpolated between the grid's."""
        import numpy as np

        order = np.argsort(self.timesteps)
        return float(np.interp(timestep, np.asarray(self.timesteps)[order], np.asarray(self.per_timestep)[order]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Spread":
        return cls(tuple(raw["timesteps"]), tuple(raw["per_timestep"]), float(raw["mean"]))


def measure_spread(scorer: Scorer, cache: PairCache, triplets: list[td.Triplet]) -> Spread:
    """The zero-shot spread of f(pos) − f(neg) over `triplets` (at most 128), per grid timestep."""
    pos, neg = _grid_scores(scorer, cache, triplets[:128])
    return spread_of(scorer, pos, neg)


def spread_of(scorer: Scorer, pos: torch.Tensor, neg: torch.Tensor) -> Spread:
    """`Spread` of the gaps of grid scores [T, C] (the scorer's conditions, in order)."""
    gaps = (pos - neg).double()
    floor = 1e-12  # a score that cannot tell these triplets apart at all still gets a finite scale

    def spread(values: torch.Tensor) -> torch.Tensor:
        return (values.std(dim=0) if len(values) > 1 else values.abs().mean(dim=0)).clamp_min(floor)

    by_timestep: dict[int, list[float]] = {}
    for condition, value in zip(scorer.conditions, spread(gaps).tolist()):
        by_timestep.setdefault(condition.timestep, []).append(value)
    timesteps = tuple(sorted(by_timestep))
    return Spread(timesteps, tuple(sum(by_timestep[t]) / len(by_timestep[t]) for t in timesteps),
                  float(spread(gaps.mean(dim=1))))


def _grid_scores(scorer: Scorer, cache: PairCache, triplets: list[td.Triplet]) -> tuple[torch.Tensor, torch.Tensor]:
    """f(pos) and f(neg) of every triplet under every grid condition, [T, C]; each distinct pair scored once."""
    pairs = sorted({(t.image, t.text) for t in triplets} | {t.negative_pair for t in triplets})
    latents, states, mask = cache.pairs(pairs)
    scorer.invalidate()
    with torch.inference_mode():
        scores = scorer.score_conditions(latents, states, mask)
    row = {pair: i for i, pair in enumerate(pairs)}
    pos = scores[[row[(t.image, t.text)] for t in triplets]]
    neg = scores[[row[t.negative_pair] for t in triplets]]
    return pos, neg


def train_step(scorer: Scorer, cache: PairCache, batch: list[td.Triplet], condition: Condition,
               config: TuneConfig, spread: Spread | None = None) -> torch.Tensor:
    pairs = [(t.image, t.text) for t in batch] + [t.negative_pair for t in batch]
    latents, states, mask = cache.pairs(pairs)
    scorer.invalidate()  # the deltas moved since the last step: e(x, ∅) must be read under the current ones
    scores = scorer.score_conditions(latents, states, mask, [condition])[:, 0]
    scale = spread.at(condition.timestep) if spread else 1.0
    return triplet_loss(scores[:len(batch)], scores[len(batch):], config.margin, scale)


def evaluate(scorer: Scorer, cache: PairCache, triplets: list[td.Triplet], margin: float,
             spread: Spread | None = None) -> tuple[float, float]:
    """Accuracy (f(pos) > f(neg)) and mean triplet loss on the inference grid (the grid mean's gaps in
    units of its zero-shot spread)."""
    return grid_metrics(*_grid_scores(scorer, cache, triplets), margin, spread)


def grid_metrics(pos: torch.Tensor, neg: torch.Tensor, margin: float, spread: Spread | None) -> tuple[float, float]:
    pos, neg = pos.mean(dim=1), neg.mean(dim=1)
    return float((pos > neg).float().mean()), float(triplet_loss(pos, neg, margin, spread.mean if spread else 1.0))


class Tuner:
    """One run: data, deltas, optimizer, head weighting, checkpoints."""

    def __init__(self, scorer: Scorer, train_file: str | Path, out: str | Path, config: TuneConfig,
                 split: td.TuningSplit | None = None) -> None:
        """`split`: the file's `td.tuning_split`, when the caller already read it to fail before loading a model."""
        self.scorer, self.config, self.out = scorer, config, Path(out)
        self.train_file = Path(train_file)
        split = split or td.tuning_split(train_file, config.val_fraction, config.seed, config.negatives_per_line,
                                         config.hard_negatives)
        examples = split.examples
        self.digest = td.file_digest(train_file)
        self.train_examples = split.train
        self.val_triplets = split.val_triplets
        everything = td.epoch_triplets(examples, examples, random.Random(0)) + self._all_sampling_candidates(examples)
        self.cache = PairCache(scorer, everything + self.val_triplets)
        self.params = attach_deltas(scorer, config.rank, config.seed, DELTAS_ON[config.deltas_on]) \
            if config.prompt_deltas else []
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay) \
            if self.params else None
        self.heads = HeadWeighting(scorer) if config.head_weighting and config.prompt_deltas else None
        self.timestep_report: dict | None = None
        self.state = TuneState()

    @staticmethod
    def _all_sampling_candidates(examples: list[td.Example]) -> list[td.Triplet]:
        """Pairs a sampled negative may use: every positive's image and text, so the cache has them all."""
        return [td.Triplet(e.image, e.text) for e in examples if e.label == 1]

    # ----- epochs and steps -------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[td.Triplet]]:
        return td.epoch_batches(self.train_examples, self.config.seed, epoch, self.config.negatives_per_line,
                                self.config.batch_size, self.config.hard_negatives)

    def step(self, epoch: int, index: int, batch: list[td.Triplet]) -> float:
        rng = random.Random(f"discff-tune/condition/{self.config.seed}/{epoch}/{index}")
        self.optimizer.zero_grad(set_to_none=True)
        loss = train_step(self.scorer, self.cache, batch, random_condition(self.scorer, rng), self.config,
                          self.spread)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        if self.heads is not None:
            self.heads.update()
        return float(loss.detach())

    @property
    def spread(self) -> Spread | None:
        return Spread.from_dict(self.state.spread) if self.state.spread else None

    def measure_spread(self) -> None:
        """The zero-shot spread the margin is measured in: from the held-out triplets' epoch-0 scores
        (`validate`), or, with nothing held out, from a sample of the first epoch's triplets."""
        if self.state.spread is None:
            sample = [t for batch in self.epoch_batches(0) for t in batch]
            self.state.spread = measure_spread(self.scorer, self.cache, sample).to_dict()

    def validate(self, epoch: int, train_loss: float | None) -> dict:
        acc = loss = None
        if self.val_triplets:
            pos, neg = _grid_scores(self.scorer, self.cache, self.val_triplets)
            if self.state.spread is None and len(self.val_triplets) > 1:
                self.state.spread = spread_of(self.scorer, pos, neg).to_dict()
            acc, loss = grid_metrics(pos, neg, self.config.margin, self.spread)
        point = {"epoch": epoch, "train_loss": train_loss, "val_accuracy": acc, "val_loss": loss}
        self.state.curve.append(point)
        best = self.state.best
        # without validation triplets there is no "best" epoch: the last deltas are written
        better = acc is not None and (best is None or (acc, -loss) > (best["val_accuracy"], -best["val_loss"]))
        if better:
            self.state.best = {"epoch": epoch, "val_accuracy": acc, "val_loss": loss,
                               "tensors": delta_tensors(self.scorer)}
        return point

    def run(self, progress: Callable[[dict], None] | None = None, stop_after: int | None = None) -> TuneResult:
        """Train from the current state; `stop_after` steps simulates an interruption (for tests)."""
        start, done_now = time.monotonic(), 0
        report = progress or (lambda info: None)
        if self.heads is not None:
            self.heads.install()
        try:
            if not self.state.curve:
                report({"phase": "validate", "epoch": 0})
                report({"phase": "epoch", **self.validate(0, None)})  # the zero-shot starting point
            if self.config.prompt_deltas:
                self.measure_spread()
            while self.config.prompt_deltas and self.state.epoch < self.config.epochs:
                batches = self.epoch_batches(self.state.epoch)
                for index in range(self.state.step, len(batches)):
                    if stop_after is not None and done_now >= stop_after:
                        raise KeyboardInterrupt
                    loss = self.step(self.state.epoch, index, batches[index])
                    self.state.step, done_now = index + 1, done_now + 1
                    self.state.loss_sum, self.state.loss_count = self.state.loss_sum + loss, self.state.loss_count + 1
                    report({"phase": "step", "epoch": self.state.epoch + 1, "loss": loss})
                    if self.state.step % self.config.checkpoint_every == 0:
                        self.save_checkpoint()
                train_loss = self.state.loss_sum / max(1, self.state.loss_count)
                report({"phase": "validate", "epoch": self.state.epoch + 1})
                point = self.validate(self.state.epoch + 1, train_loss)
                self.state.epoch, self.state.step, self.state.loss_sum, self.state.loss_count = \
                    self.state.epoch + 1, 0, 0.0, 0
                self.save_checkpoint()
                report({"phase": "epoch", **point})
        except KeyboardInterrupt:
            self.save_checkpoint()
            return self._result(start, interrupted=True)
        finally:
            if self.heads is not None:
                self.heads.remove()
        self.write_output()
        checkpoint_path(self.out).unlink(missing_ok=True)
        return self._result(start)

    def _result(self, start: float, interrupted: bool = False) -> TuneResult:
        best = self.state.best or {"epoch": None}
        return TuneResult(self.out, list(self.state.curve), best["epoch"], self.n_train_triplets(),
                          len(self.val_triplets), time.monotonic() - start, interrupted, self.timestep_report)

    def n_train_triplets(self) -> int:
        return sum(len(b) for b in self.epoch_batches(0))

    # ----- output and checkpoints -------------------------------------------------------------

    def write_output(self) -> None:
        """The best deltas (by validation accuracy, then loss) or the last ones when nothing is held out."""
        if self.val_triplets and self.state.best is not None:
            load_delta_tensors(self.scorer, self.state.best["tensors"], self.config.rank)
        if self.config.timestep_weights:
            self.timestep_report = self.fit_timestep_weights()
        best = self.state.best or {}
        save_deltas_file(self.out, self.scorer, self.config.rank, {
            "tune_config": asdict(self.config),
            "train_file": self.train_file.name,
            "train_digest": self.digest,
            "curve": self.state.curve,
            "best_epoch": best.get("epoch"),
            "n_train_triplets": self.n_train_triplets(),
            "n_val_triplets": len(self.val_triplets),
            "spread": self.state.spread,
            "timestep_weights": self.timestep_report,
        })

    def fit_timestep_weights(self) -> dict:
        """Per-condition weights fitted on every epoch's training triplets under the kept deltas."""
        from training.tune.timestep_weights import tune_condition_weights

        seen, train = set(), []
        for epoch in range(self.config.epochs):
            for triplet in (t for batch in self.epoch_batches(epoch) for t in batch):
                key = ((triplet.image, triplet.text), triplet.negative_pair)
                if key not in seen:
                    seen.add(key)
                    train.append(triplet)
        return tune_condition_weights(self.scorer, self.cache, train, self.val_triplets)

    def _identity(self) -> dict:
        return {"fingerprint": self.scorer.parts.fingerprint, "train_digest": self.digest,
                "tune_config": asdict(self.config), "engine_config": self.scorer.config.to_dict()}

    def save_checkpoint(self) -> None:
        path = checkpoint_path(self.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = asdict(self.state)
        payload = {"format": CHECKPOINT_FORMAT, **self._identity(), "state": state,
                   "deltas": delta_tensors(self.scorer),
                   "optimizer": self.optimizer.state_dict() if self.optimizer else {},
                   "importance": self.heads.importance if self.heads else {}}
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(payload, tmp)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a half checkpoint behind (the previous one stays)
            raise

    def load_checkpoint(self) -> None:
        path = checkpoint_path(self.out)
        if not path.is_file():
            raise DiscffError(f"Nothing to resume: no checkpoint '{path}' (it is written next to --out while tuning).")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:
            raise DiscffError(f"Checkpoint '{path}' is unreadable; delete it and tune without --resume.") from None
        if payload.get("format") != CHECKPOINT_FORMAT or \
                {k: payload.get(k) for k in self._identity()} != self._identity():
            raise DiscffError(f"Checkpoint '{path}' belongs to another run (model, training file or options differ); "
                              "re-run with the same options or without --resume.")
        load_delta_tensors(self.scorer, payload["deltas"], self.config.rank)
        if self.config.prompt_deltas:
            self.params = [p for proc in self.scorer.processors.values()
                           for slot in SLOTS if getattr(proc, slot) is not None
                           for p in getattr(proc, slot).parameters()]
            self.optimizer = torch.optim.AdamW(self.params, lr=self.config.lr, weight_decay=self.config.weight_decay)
            self.optimizer.load_state_dict(payload["optimizer"])
        if self.heads is not None:
            self.heads.importance = dict(payload["importance"])
        self.state = TuneState(**payload["state"])


def prepare_for_training(scorer: Scorer) -> None:
    """Gradient checkpointing on GPU (activations dominate memory there); bf16 comes from load_scorer."""
    if scorer.device.type == "cuda":
        scorer.parts.unet.enable_gradient_checkpointing()
