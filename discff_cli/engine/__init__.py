"""The Discffusion engine: a diffusion model's U-Net read as an image-text matcher.

models.py / model_index.py load a diffusers pipeline (hub id, local folder, the bundled demo) and
say which family it is; families/ adapt SD 1/2, SDXL and SD3; processor.py is the attention
processor that reads cross-attention; scorer.py and rank.py run the passes and every score
family (scores.py) from them; deltas.py loads `discff tune`'s output and holds the one rule for
which model goes with --deltas (`model_for_deltas`); explain.py the maps. Long loops report
`progress(done, total)` to a callback their caller draws.

The engine imports only itself, index/ (hub and model-file checks) and discff_cli.errors: never
search/, evaluation/, render/, commands/, service/ or training/ (training imports the engine).
"""

from discff_cli.engine.config import DEFAULT_MODEL, EngineConfig

__all__ = ["DEFAULT_MODEL", "EngineConfig"]
