"""Loading Stable Diffusion parts from a hub id, a local diffusers directory, or the bundled demo.

One code path for real weights, the bundled demo model and the tiny test models, so what the
tests load is what users load.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discff_cli.errors import DiscffError, MissingModelError
from index.hub import hub_reachable

ASSETS = Path(__file__).parents[1] / "assets"
DEMO_MODEL_DIR = ASSETS / "demo" / "diffusion"
# `discff tune` on 5% of the demo world's train split (training/demo_models/tune_demo_deltas.py)
DEMO_TUNED_DELTAS = ASSETS / "demo" / "tuned" / "discffusion.safetensors"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class SDParts:
    """The pieces of a diffusion pipeline the engine needs (no safety checker, no sampler loop).

    `unet` is the denoiser whatever its kind: the U-Net of SD 1/2 and SDXL, SD3's MMDiT
    transformer. `tokenizer`/`text_encoder` are the first of `tokenizers`/`text_encoders`
    (SDXL has two, SD3 three; SD3's T5 may be None, as its pipeline allows).
    """

    name: str
    vae: Any
    unet: Any
    tokenizer: Any
    text_encoder: Any
    scheduler: Any
    fingerprint: str
    family: str = "sd"                        # engine/families: sd | sdxl | sd3
    tokenizers: tuple = ()
    text_encoders: tuple = ()
    pipeline_config: dict = field(default_factory=dict)  # model_index.json (e.g. force_zeros_for_empty_prompt)

    def __post_init__(self) -> None:
        self.tokenizers = tuple(self.tokenizers) or (self.tokenizer,)
        self.text_encoders = tuple(self.text_encoders) or (self.text_encoder,)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Pixel size the denoiser was trained at (512 for SD 2.1-base, 1024 for SDXL and SD3)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def resolve_model(name: str) -> str:
    """Map the reserved word `demo` to the bundled model; anything else is returned unchanged."""
    return str(DEMO_MODEL_DIR) if name == "demo" else name


def _is_hub_id(name: str) -> bool:
    """`org/name` that is not an existing path: everything else is treated as a local directory."""
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


def _check_local_dir(path: Path, name: str) -> None:
    from discff_cli.engine.model_index import components, family_of, read_local_index

    if not path.is_dir():
        raise DiscffError(f"Model directory '{name}' does not exist; pass --model with a diffusers-format directory, "
                          "a hub id, or 'demo'.")
    index = read_local_index(path)
    parts = components(index, family_of(index, name))
    missing = [sub for sub, _ in parts if not (path / sub).is_dir()]
    if missing:
        raise DiscffError(f"'{name}' is not a diffusers Stable Diffusion directory: it has no {', '.join(missing)} "
                          "subfolder(s).")
    _check_part_files(path, name, [sub for sub, _ in parts])


def _config_file(sub: str) -> str:
    kind = sub.rstrip("_0123456789")
    return {"scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}.get(kind, "config.json")


def _check_part_files(path: Path, name: str, subs: list[str]) -> None:
    """Each part's config parses and each weights file is whole, before diffusers reads any of them."""
    from index.model_files import json_problem, weights_problem

    for sub in subs:
        file = path / sub / _config_file(sub)
        why = json_problem(file) if (file.exists() or not sub.startswith("tokenizer")) else None
        if why:
            raise DiscffError(f"Model '{name}' is broken: '{file}' {why}; restore it or pass another --model.")
    for sub in subs:
        if sub.startswith(("tokenizer", "scheduler")):
            continue
        problem = weights_problem(path / sub)
        if problem:
            raise DiscffError(f"Model '{name}' is broken: '{problem[0]}' {problem[1]}; restore it or pass another "
                              "--model.")


def load_sd(name: str, device: str = "cpu", dtype: Any = None) -> SDParts:
    """Load VAE, denoiser, tokenizers, text encoders and scheduler, frozen and in eval mode.

    The family (SD 1/2, SDXL, SD3) comes from the pipeline's model_index.json (model_index.py).
    """
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
        raise MissingModelError(missing_weights_hint(name, exc)) from None


def missing_weights_hint(name: str, exc: Exception) -> str:
    """One sentence: what is missing, the command that fetches it, where it must land, the alternatives."""
    from discff_cli.engine.config import DEFAULT_MODEL, DEFAULT_MODEL_NOTE

    note = f" ({DEFAULT_MODEL_NOTE})" if name == DEFAULT_MODEL else ""
    return (f"Diffusion weights for '{name}'{note} are not on this machine and could not be downloaded ({exc}); "
            f"on a machine with network run `hf download {name}` (the CLI of huggingface_hub, which discff installs; "
            f"elsewhere `pip install -U huggingface_hub`) and copy '{hub_cache_dir(name)}' to the same path here, "
            "or pass --model /path/to/a/diffusers/directory (or --model demo for the bundled model, to try discff "
            "first).")


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

    from discff_cli.engine.model_index import component_class, components, family_of

    index = _pipeline_index(source, common)
    family = family_of(index, name)
    # Loaded in fp32 and fingerprinted before the cast, so deltas tuned on a CPU (fp32) are accepted
    # on a GPU (bf16) and the other way round: the fingerprint names the weights, not their dtype.
    load = _part_loader(source, name)
    loaded = {}
    for sub, _ in components(index, family):
        cls = component_class(index, sub, family)
        kwargs = {} if sub.startswith(("tokenizer", "scheduler")) else {"torch_dtype": torch.float32}
        loaded[sub] = load(sub, lambda: cls.from_pretrained(source, subfolder=sub, **kwargs, **common))
    if family == "sd3" and "tokenizer_3" not in loaded:
        loaded["text_encoder_3"] = None  # the pipeline runs without T5 (zeros in its place)
    return _assemble(name, family, loaded, index, device, dtype)


def _pipeline_index(source: str, common: dict) -> dict:
    """model_index.json of a local directory or (cached) hub repo; {} for an older export without one."""
    from discff_cli.engine.model_index import read_local_index

    if Path(source).expanduser().is_dir():
        return read_local_index(Path(source).expanduser())
    from huggingface_hub import hf_hub_download

    try:
        file = hf_hub_download(source, "model_index.json", local_files_only=common["local_files_only"])
    except OSError:
        raise
    except Exception as exc:  # huggingface_hub's not-found errors are not all OSErrors
        raise OSError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return read_local_index(Path(file).parent)


def _assemble(name: str, family: str, loaded: dict, index: dict, device: str, dtype: Any) -> SDParts:
    """SDParts from the loaded components, fingerprinted, frozen and cast."""
    from discff_cli.engine.families import family_for

    denoiser = loaded.get("unet", loaded.get("transformer"))
    encoders = tuple(loaded.get(k) for k in ("text_encoder", "text_encoder_2", "text_encoder_3") if k in loaded)
    tokenizers = tuple(loaded.get(k) for k in ("tokenizer", "tokenizer_2", "tokenizer_3") if k in loaded)
    config = {k: v for k, v in index.items() if not isinstance(v, list)}
    parts = SDParts(name, loaded["vae"], denoiser, tokenizers[0], encoders[0], loaded["scheduler"], "", family,
                    tokenizers, encoders, config)
    parts.fingerprint = weights_fingerprint(family_for(parts).fingerprint_modules())
    for module in (parts.vae, denoiser, *encoders):
        if module is not None:
            module.requires_grad_(False).eval().to(device, dtype)
    return parts


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
