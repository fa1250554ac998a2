"""Tiny SDXL and SD3 pipelines built from configs, saved as their diffusers pipelines save them.

Same shapes of conditioning as the real models (SDXL: two CLIP encoders, the second with a
projection, pooled ``text_embeds`` + 6 ``time_ids`` of added conditioning; SD3: an MMDiT with
joint attention, CLIP-L + CLIP-G, a flow-matching scheduler, a VAE with a shift factor) at widths
that run in milliseconds on a CPU. `save_pretrained` of the real pipeline class writes them, so
`discff_cli.engine.models.load_sd` reads them exactly as it reads a downloaded SDXL or SD3.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
             "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "gelu", "projection_dim": 32,
             "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}
TINY_SDXL_UNET = {
    "block_out_channels": [32, 64], "layers_per_block": 2, "sample_size": 16, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [2, 4], "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8, "transformer_layers_per_block": [1, 2], "projection_class_embeddings_input_dim": 80,
    "cross_attention_dim": 64, "norm_num_groups": 32,
}  # 80 = 6 time ids × 8 + the second encoder's 32-d projection; 64 = 32 + 32 concatenated hidden states
TINY_VAE = {"block_out_channels": [32, 64], "in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
            "sample_size": 32, "norm_num_groups": 32}
SDXL_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
                  "timestep_spacing": "leading", "prediction_type": "epsilon", "num_train_timesteps": 1000}
TINY_SD3_TRANSFORMER = {"sample_size": 16, "patch_size": 2, "in_channels": 4, "num_layers": 3,
                        "attention_head_dim": 8, "num_attention_heads": 4, "caption_projection_dim": 32,
                        "joint_attention_dim": 64, "pooled_projection_dim": 64, "out_channels": 4}
SD3_VAE_EXTRA = {"shift_factor": 0.0609, "scaling_factor": 1.5035, "use_quant_conv": False,
                 "use_post_quant_conv": False}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}


def _tokenizer(tmp: Path) -> Any:
    from transformers import CLIPTokenizer

    from training.demo_models.tokenizer import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(tmp)))


def _clip_pair() -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    return CLIPTextModel(CLIPTextConfig(**TINY_CLIP)), CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP))


def build_random_sdxl(out_dir: str | Path, seed: int = 0) -> Path:
    """A random-weight StableDiffusionXLPipeline saved with save_pretrained (force_zeros_for_empty_prompt on)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    out = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = _tokenizer(out.parent / f".{out.name}-tokenizer")
    text_encoder, text_encoder_2 = _clip_pair()
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**TINY_VAE), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=UNet2DConditionModel(**TINY_SDXL_UNET),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER))
    pipe.save_pretrained(out)
    return out


T5_WORDS = ["<pad>", "</s>", "<unk>"] + "a the red blue green yellow cube ball picture left of two over".split()
TINY_T5 = {"d_model": 64, "d_ff": 37, "d_kv": 8, "num_layers": 1, "num_heads": 4, "vocab_size": 32,
           "pad_token_id": 0, "eos_token_id": 1}  # d_model = the transformer's joint_attention_dim


def _t5() -> tuple[Any, Any]:
    """A tiny T5 encoder and a Unigram T5TokenizerFast over a few words (no sentencepiece file needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    tok = Tokenizer(models.Unigram([(w, -float(i)) for i, w in enumerate(T5_WORDS)], unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                extra_ids=0)
    return T5EncoderModel(T5Config(**TINY_T5)), tokenizer


def build_random_sd3(out_dir: str | Path, seed: int = 0, t5: bool = False) -> Path:
    """A random-weight StableDiffusion3Pipeline saved with save_pretrained; without T5 unless `t5`
    (the pipeline allows both: zeros stand in for T5's states when it is absent)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, \
        StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    out = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = _tokenizer(out.parent / f".{out.name}-tokenizer")
    encoders = [CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP)) for _ in range(2)]
    encoder_3, tokenizer_3 = _t5() if t5 else (None, None)
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**TINY_SD3_TRANSFORMER), vae=AutoencoderKL(**TINY_VAE, **SD3_VAE_EXTRA),
        text_encoder=encoders[0], text_encoder_2=encoders[1], text_encoder_3=encoder_3, tokenizer=tokenizer,
        tokenizer_2=tokenizer, tokenizer_3=tokenizer_3, scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER))
    pipe.save_pretrained(out)
    return out
