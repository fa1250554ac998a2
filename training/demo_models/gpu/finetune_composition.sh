#!/usr/bin/env bash
# Device call (<= 10 min): the CPU composition recipe (training/demo_models/finetune_composition.py) at a GPU's batch,
# warm-started from the bundled model (or from a CPU run's checkpoint folder carried as $RUN), then a quick
# generation check; sends back the model split in 15 MiB parts and the curves.
#   run(timeout_s=600, carry=[".whl/core"], command="bash training/demo_models/gpu/finetune_composition.sh")
set -uo pipefail
source training/demo_models/gpu/setup_device.sh || exit 3
RUN=${RUN:-out/run}
mkdir -p out
python3 -m training.demo_models.finetune_composition --run "$RUN" --results out/results --device cuda --threads 8 \
    --workers 16 --n-train 120000 --batch 1024 --unet-lr 5e-4 --text-lr 2e-4 --hours 0.12 \
    --eval-every 200 --eval-n 100 "$@" 2>&1 | tee out/train_stdout.txt
python3 -m training.demo_models.finetune_composition --run "$RUN" --n-train 120000 --batch 1024 --unet-lr 5e-4 --text-lr 2e-4 \
    --export out/model "$@" || { cp out/train_stdout.txt "$OUT/"; exit 1; }
timeout 80 python3 -m training.demo_models.check_generation --model out/model --device cuda --n-single 96 --n-two 240 \
    --batch 240 --guidance 5.0 --out out/results/quick_check.json --grid out/results/quick_samples.png | tail -30
tar -C out -cf out/model.tar model && split -b 15m out/model.tar "$OUT/model.tar.part-"
tar -C out -czf "$OUT/train_results.tgz" results train_stdout.txt
ls -la "$OUT"
