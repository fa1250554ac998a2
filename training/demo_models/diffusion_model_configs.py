"""The demo latent diffusion model's architecture and training settings, as data.

The shapes follow Stable Diffusion 2.1-base (AutoencoderKL -> UNet2DConditionModel with
cross-attention and linear projections -> CLIPTextModel, DDIM scheduler with SD's
scaled-linear betas) shrunk to the demo world's 64x64 images, so the bundled model is
loaded by exactly the code that loads SD. Sizes are chosen for the package budget
(<= ~60 MB in fp16) and for CPU reranking speed: the text encoder's 49,408-row token
embedding (the real CLIP BPE ids) is the largest single tensor, so its width stays small.

`ARCHS` names whole-model presets: "base" is the bundled model's shape (26.5 MB), "wide" a
U-Net with ~2x the parameters for a longer GPU run (~33 MB with the frozen demo-CLIP text
tower), "tiny" a few-second CPU model for tests. The U-Net's cross_attention_dim always
follows the text encoder actually used (96 trained from scratch, 64 for the demo CLIP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGE_SIZE = 64
TEXT_HIDDEN = 96

# 3 encoder blocks -> 2 downsamples -> 4x16x16 latents (SD: 4 blocks, 8x).
VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 1.0,  # replaced after VAE training by 1 / std of the latents
}

# vocab 49408 and the special-token ids are those of CLIP's BPE (training.demo_models.tokenizer).
TEXT_CONFIG: dict = {
    "vocab_size": 49408,
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 4 * TEXT_HIDDEN,
    "projection_dim": TEXT_HIDDEN,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 0,  # "!" pads, as in SD 2.x
}

# SD 2.1 layout: CrossAttnDown x2 + Down, cross-attention mid, Up + CrossAttnUp x2.
# `attention_head_dim` is diffusers' legacy name for the number of heads (SD 2.1 uses
# [5, 10, 20, 20]); here every head is 16 wide. 11 attn2 layers: 4 down, 1 mid, 6 up.
UNET_CONFIG: dict = {
    "sample_size": IMAGE_SIZE // 4,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [48, 96, 128],
    "layers_per_block": 2,
    "attention_head_dim": [3, 6, 8],
    "cross_attention_dim": TEXT_HIDDEN,
    "use_linear_projection": True,
    "norm_num_groups": 16,
}

# Same layout (11 attn2 layers, head width 16), about twice the U-Net parameters (~12.5 M).
UNET_WIDE: dict = {**UNET_CONFIG, "block_out_channels": [64, 128, 192], "attention_head_dim": [4, 8, 12]}

# Test-sized: same block types and layer counts, seconds per step on a CPU.
VAE_TINY: dict = {**VAE_CONFIG, "block_out_channels": [8, 16, 16], "norm_num_groups": 8}
UNET_TINY: dict = {**UNET_CONFIG, "block_out_channels": [16, 32, 32], "attention_head_dim": [2, 2, 2],
                   "layers_per_block": 1, "norm_num_groups": 8}
TEXT_TINY: dict = {**TEXT_CONFIG, "hidden_size": 16, "intermediate_size": 32, "projection_dim": 16,
                   "num_hidden_layers": 1, "num_attention_heads": 2}

ARCHS: dict[str, dict[str, dict]] = {
    "base": {"vae": VAE_CONFIG, "unet": UNET_CONFIG, "text_encoder": TEXT_CONFIG},
    "wide": {"vae": VAE_CONFIG, "unet": UNET_WIDE, "text_encoder": TEXT_CONFIG},
    "tiny": {"vae": VAE_TINY, "unet": UNET_TINY, "text_encoder": TEXT_TINY},
}


def arch_configs(arch: str, text_hidden: int | None = None) -> dict[str, dict]:
    """Copies of an ARCHS preset; `text_hidden` (a frozen encoder's width) sets the U-Net's cross_attention_dim."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch '{arch}'; choose one of {', '.join(ARCHS)}")
    cfg = {k: dict(v) for k, v in ARCHS[arch].items()}
    cfg["unet"]["cross_attention_dim"] = text_hidden or cfg["text_encoder"]["hidden_size"]
    return cfg


# DDIMScheduler as saved with SD 2.1-base (epsilon prediction, 1000 scaled-linear steps).
SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass
class TrainConfig:
    """Hyper-parameters of train_diffusion; written to results/diffusion/hparams.json."""

    seed: int = 0
    arch: str = "base"             # ARCHS preset: base | wide | tiny
    text_encoder: str = "train"    # train: CLIPTextModel from scratch, jointly; clip: frozen demo-CLIP text tower
    clip_layer: str = "penultimate"  # which demo-CLIP layer conditions the U-Net (SD 2.x: penultimate)
    n_train: int = 120_000         # world scenes rendered once, captions re-phrased each step
    vae_steps: int = 1500
    vae_batch: int = 256
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    unet_steps: int = 7000
    unet_batch: int = 512
    unet_lr: float = 5e-4
    text_lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup: int = 300
    ema_decay: float = 0.999
    caption_dropout: float = 0.1   # empty caption -> classifier-free guidance
    two_object_weight: float = 0.5  # share of each batch drawn from two-object scenes (world: ~0.5)
    curriculum_ramp: float = 0.0   # fraction of training over which that share rises from 0.5 (0 = at once)
    extra_phrasings: int = 0       # 1: also train on world.extra_captions (phrasings the test split never uses)
    grad_clip: float = 1.0
    time_budget_s: float = 0.0     # 0 = no limit; else stop U-Net training at this wall time
    eval_single: int = 240         # generated images judged by check_image
    eval_two: int = 240
    eval_steps: int = 50           # DDIM steps for the generation check
    guidance: float = 5.0
    sanity_n: int = 200            # Diffusion-Classifier-style caption vs hard-negative test

    def to_dict(self) -> dict:
        return asdict(self)
