#!/usr/bin/env bash
# Device call 1 (<= 10 min): train the demo diffusion model, sanity-check its generations, and send
# back the model (tar split in 15 MiB parts: $OUT takes 8 files of <= 16 MiB) and the training record.
# Extra train_diffusion flags may be appended: `bash training/demo_models/gpu/train.sh --arch wide`.
set -uo pipefail
source training/demo_models/gpu/setup_device.sh || exit 3
mkdir -p out
python3 -m training.demo_models.train_diffusion --out out/model --results out/results --device cuda --workers 16 \
    --vae-from discff_cli/assets/demo/diffusion --text-encoder clip --clip-layer penultimate --arch base \
    --unet-batch 2048 --unet-lr 1e-3 --warmup 300 --unet-steps 1000000 --deadline 470 \
    --two-object-weight 0.75 --curriculum-ramp 0.3 --extra-phrasings 1 --caption-dropout 0.1 "$@" \
    2>&1 | tee out/train_stdout.txt
[ -f out/model/model_index.json ] || { echo "no model saved"; cp out/train_stdout.txt "$OUT/"; exit 1; }
timeout 80 python3 -m training.demo_models.check_generation --model out/model --device cuda --n-single 96 --n-two 240 \
    --batch 240 --guidance 5.0 --out out/results/quick_check.json --grid out/results/quick_samples.png | tail -30
tar -C out -cf out/model.tar model && split -b 15m out/model.tar "$OUT/model.tar.part-"
tar -C out -czf "$OUT/train_results.tgz" results train_stdout.txt
ls -la "$OUT"
