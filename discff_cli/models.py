"""Loading Stable Diffusion parts from a hub id, a local diffusers directory, or the bundled demo.

One code path for real weights, the bundled demo model and the tiny test models, so what the
tests load is what users load.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discff_cli.errors import DiscffError, MissingModelError
from index.hub import hub_reachable

ASSETS = Path(__file__).parent / "assets"
DEMO_MODEL_DIR = ASSETS / "demo" / "diffusion"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SDParts:
    """The pieces of a Stable Diffusion pipeline the engine needs (no safety checker, no sampler loop)."""

    name: str
    vae: Any
    unet: Any
    tokenizer: Any
    text_encoder: Any
    scheduler: Any
    fingerprint: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Pixel size the U-Net was trained at (512 for SD 2.1-base)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def resolve_model(name: str) -> str:
    """Map the reserved word `demo` to the bundled model; anything else is returned unchanged."""
    return str(DEMO_MODEL_DIR) if name == "demo" else name


def _is_hub_id(name: str) -> bool:
    """`org/name` that is not an existing path: everything else is treated as a local directory."""
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


def _check_local_dir(path: Path, name: str) -> None:
    if not path.is_dir():
        raise DiscffError(f"Model directory '{name}' does not exist; pass --model with a diffusers-format directory, "
                          "a hub id, or 'demo'.")
    missing = [sub for sub in SUBFOLDERS if not (path / sub).is_dir()]
    if missing:
        raise DiscffError(f"'{name}' is not a diffusers Stable Diffusion directory: it has no {', '.join(missing)} "
                          "subfolder(s).")
    _check_part_files(path, name)


CONFIGS = {"vae": "config.json", "unet": "config.json", "text_encoder": "config.json",
           "scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}


def _check_part_files(path: Path, name: str) -> None:
    """Each part's config parses and each weights file is whole, before diffusers reads any of them."""
    from index.model_files import json_problem, weights_problem

    for sub, config in CONFIGS.items():
        file = path / sub / config
        why = json_problem(file) if (file.exists() or sub != "tokenizer") else None
        if why:
            raise DiscffError(f"Model '{name}' is broken: '{file}' {why}; restore it or pass another --model.")
    for sub in ("vae", "unet", "text_encoder"):
        problem = weights_problem(path / sub)
        if problem:
            raise DiscffError(f"Model '{name}' is broken: '{problem[0]}' {problem[1]}; restore it or pass another "
                              "--model.")


def load_sd(name: str, device: str = "cpu", dtype: Any = None) -> SDParts:
    """Load VAE, U-Net, tokenizer, text encoder and DDIM scheduler, frozen and in eval mode."""
    source = resolve_model(name)
    local = Path(source).expanduser()
    if not _is_hub_id(source):
        _check_local_dir(local, name)
        return _load_from(str(local), name, device, dtype, local_only=True)
    try:
        return _load_from(source, name, device, dtype, local_only=True)
    except OSError:
        pass
    try:
        if not hub_reachable():
            raise OSError("the model hub is unreachable")
        return _load_from(source, name, device, dtype, local_only=False)
    except OSError as exc:
        raise MissingModelError(
            f"Stable Diffusion weights for '{name}' are not on this machine and could not be downloaded ({exc}); "
            f"on a machine with network run `hf download {name}` (huggingface_hub's CLI) and copy "
            f"'{hub_cache_dir(name)}' to the same path here, or pass --model /path/to/a/diffusers/directory "
            "(or --model demo for the bundled model, to try discff first)."
        ) from None


def hub_cache_dir(repo: str) -> str:
    """Where huggingface_hub keeps (and looks for) a model repo's files on this machine."""
    from huggingface_hub import constants

    return str(Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")))


def _load_from(source: str, name: str, device: str, dtype: Any, local_only: bool) -> SDParts:
    import torch

    _quiet_libraries()
    dtype = dtype or torch.float32
    common = {"local_files_only": local_only}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter from hub/diffusers internals, not the user's concern
        return _load_parts(source, name, device, dtype, common)


def _load_parts(source: str, name: str, device: str, dtype: Any, common: dict) -> SDParts:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # Loaded in fp32 and fingerprinted before the cast, so deltas tuned on a CPU (fp32) are accepted
    # on a GPU (bf16) and the other way round: the fingerprint names the weights, not their dtype.
    fp32 = torch.float32
    load = _part_loader(source, name)
    vae = load("vae", lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=fp32, **common))
    unet = load("unet", lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=fp32,
                                                                      **common))
    text_encoder = load("text_encoder", lambda: CLIPTextModel.from_pretrained(source, subfolder="text_encoder",
                                                                              torch_dtype=fp32, **common))
    tokenizer = load("tokenizer", lambda: CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **common))
    scheduler = load("scheduler", lambda: DDIMScheduler.from_pretrained(source, subfolder="scheduler", **common))
    fingerprint = weights_fingerprint({"unet": unet, "text_encoder": text_encoder})
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False).eval().to(device, dtype)
    return SDParts(name, vae, unet, tokenizer, text_encoder, scheduler, fingerprint)


def _part_loader(source: str, name: str):
    """Run one part's from_pretrained; any failure other than 'not in the cache' is one sentence naming the part.

    OSError from a hub id is left alone: it means "not cached", and load_sd then tries the network.
    """
    local = Path(source).expanduser().is_dir()

    def load(sub: str, make):
        try:
            return make()
        except OSError as exc:
            if not local:
                raise
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - diffusers/transformers/safetensors raise many kinds
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DiscffError(f"Model '{name}' is broken: its '{sub}' part could not be loaded from "
                          f"'{Path(source) / sub}' ({why}); restore it or pass another --model.")

    return load


def _quiet_libraries() -> None:
    """Loading bars and info logs of diffusers/transformers would drown our own output."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def weights_fingerprint(modules: dict[str, Any], samples_per_tensor: int = 1024) -> str:
    """A short, stable digest of module weights: names, shapes and a strided sample of values.

    Hashing every byte of a 3.5 GB checkpoint would take seconds; a strided sample of every
    tensor still changes when any tensor is retrained, resized or swapped.
    """
    import torch

    digest = hashlib.sha256()
    for prefix, module in modules.items():
        for key, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
            digest.update(f"{prefix}.{key}:{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().round(6).tobytes())
    return digest.hexdigest()[:16]
