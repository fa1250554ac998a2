#!/usr/bin/env bash
# Run HERE (not on the device), in the repo root: the Python packages the device image lacks, as
# wheels for its Python 3.12 / x86-64, in two folders a `run` call names in `carry`:
#   .whl/core  (diffusers, open_clip_torch and its ftfy/wcwidth) - every call
#   .whl/faiss (faiss-cpu, 18.8 MB)                               - only calls that build an index
# The device image already has torch 2.11, transformers 5.17, huggingface_hub 1.33, safetensors,
# tokenizers, timm, torchvision, numpy, pillow, pyarrow, click, rich, regex, tqdm, pyyaml.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
P=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
   --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
   --platform manylinux1_x86_64)
PY=${PYTHON:-python3}
$PY -m pip download "${P[@]}" -d .whl/core diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
$PY -m pip download "${P[@]}" -d .whl/faiss faiss-cpu==1.15.1
du -sh .whl/*
