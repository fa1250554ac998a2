#!/usr/bin/env bash
# Device call 2 (<= 10 min; the step time-boxes add up to 510 s): measure the model now in discff_cli/assets/demo/diffusion (`--model demo`).
# Each step writes into out/m as it finishes and is time-boxed, so a slow step cannot cost the others;
# everything comes back as $OUT/measure.tgz (plus the log).
set -uo pipefail
source training/demo_models/gpu/setup_device.sh || exit 3
M=out/m; mkdir -p $M ev fs; LOG=$M/measure_log.txt
D="python3 -m discff_cli"
step() { local t=$1; shift; echo "== $(date +%T) $*" | tee -a $LOG; timeout "$t" "$@" 2>&1 | tail -60 | tee -a $LOG; }
# 1. generation correctness: 240 single + 240 two-object test prompts, 95% Wilson CIs; guidance sweep; sanity.
step 70 python3 -m training.demo_models.check_generation --model discff_cli/assets/demo/diffusion --device cuda \
    --n-single 240 --n-two 240 --batch 240 --guidance 5.0 3.0 7.5 --sanity-n 200 \
    --out $M/metrics.json --grid $M/samples.png
# 2. eval files (test split, 200 per tag) and the few-shot tuning file (5% of train).
step 30 python3 -m training.world export-eval ev --n-per-tag 200
cat ev/*.jsonl > ev/all.jsonl
step 30 python3 -m training.world export-fewshot fs/fewshot.jsonl --fraction 0.05
# 3. tune, then ONE eval run: CLIP, Discffusion zero-shot and tuned, paired McNemar (default grid).
step 90 $D tune fs/fewshot.jsonl --model demo --device cuda --epochs 3 --batch-size 16 --lr 1e-3 \
    --negatives-per-line 3 --val-fraction 0.05 --out $M/tuned.safetensors --json
step 160 sh -c "$D eval ev/all.jsonl --clip demo --model demo --device cuda --deltas $M/tuned.safetensors --json > $M/eval_200_per_tag.json"
# 4. relational queries of the demo gallery: CLIP alone vs CLIP shortlist + Discffusion rerank (paired).
step 90 python3 benchmarks/relational_rerank.py --model demo --images 1000 --queries 240 \
    --rerank 20 --device cuda --dir out/gallery --json $M/relational_rerank.json
# 5. the "after" attention figure.
step 40 python3 -m training.demo_models.attention_tokens --model demo --n 240 --device cuda --out $M/attention_tokens
tar -C out -czf "$OUT/measure.tgz" m && cp $LOG "$OUT/"
ls -la "$OUT"
