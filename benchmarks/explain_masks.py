"""Do `discff explain`'s maps look where the caption's objects are? One command, on demo-world scenes:

    python benchmarks/explain_masks.py --model demo --scenes 100 --out docs/results/explain

Single-object scenes: share of the denoise map's positive mass inside the named object's mask,
against the object's share of the image (chance). Two-object scenes: per colour and shape word,
how often its attention map (DAAM) peaks on its own object rather than the other, and its share of
attention mass on its own object (training/demo_models/explain_masks.py). The maps are the product's own, under
the engine options `discff score` takes (defaults: 10 DDIM steps x levels 0.2,0.4,0.6,0.8, seed 0).
Prints the figures and writes `<out>/<name>.json` and `<out>/<name>.txt` (name: --name, default
the model's folder name).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", help="diffusers directory, hub id or 'demo'")
    p.add_argument("--deltas", default=None, help="prompt deltas from `discff tune`")
    p.add_argument("--scenes", type=int, default=100, help="scenes of each kind (single, two-object)")
    p.add_argument("--split", default="test")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--levels", default="0.2,0.4,0.6,0.8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="docs/results/explain", help="folder for the JSON and text record")
    p.add_argument("--name", default=None, help="record name (default: the model's folder name)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from discff_cli.engine.config import EngineConfig
    from discff_cli.engine.scorer import load_scorer
    from training.demo_models import explain_masks as em

    config = EngineConfig(steps=args.steps, levels=tuple(float(x) for x in args.levels.split(",")), seed=args.seed,
                          device=args.device)
    scorer = load_scorer(args.model, config, args.deltas)
    start = time.time()
    single = [em.single_object(scorer, ex) for ex in em.scenes(1, args.scenes, args.split)]
    words = [o for ex in em.scenes(2, args.scenes, args.split) for o in em.word_outcomes(scorer, ex)]
    return {"model": args.model, "model_fingerprint": scorer.parts.fingerprint, "deltas": args.deltas,
            "split": args.split, "engine": config.to_dict(), "machine": f"{platform.machine()} "
            f"{platform.system()}, torch device {scorer.device}", "time_s": round(time.time() - start, 1),
            "unet_passes": scorer.unet_passes, "single_object": em.summarise_single(single),
            "two_object_words": em.summarise_words(words)}


def report(out: dict) -> None:
    """The figures, one line each."""
    s = out["single_object"]
    print(f"model {out['model']} ({out['model_fingerprint']}), {out['engine']['steps']} steps x levels "
          f"{out['engine']['levels']}, seed {out['engine']['seed']}: {out['unet_passes']} U-Net passes in "
          f"{out['time_s']} s")
    print(f"single-object scenes (n={s['scenes']}): denoise positive mass inside the object "
          f"{s['share_inside']['mean']:.3f} [{s['share_inside']['ci95'][0]:.3f}, {s['share_inside']['ci95'][1]:.3f}]"
          f" vs chance (object's area share) {s['chance']['mean']:.3f}: {s['ratio_to_chance']:.2f}x chance; "
          f"above chance in {s['scenes_above_chance']:.0%} of scenes")
    for kind, w in out["two_object_words"].items():
        own = w["own_of_object_peaks"]
        print(f"two-object scenes, {kind} words (n={w['words']}): attention peaks on own object "
              f"{w['peak_own']:.1%}, on the other {w['peak_other']:.1%}, background {w['peak_background']:.1%}"
              f" (own of object peaks {'n/a' if own is None else f'{own:.1%}'}); own-object mass share "
              f"{w['own_mass_share']['mean']:.3f} vs own-area share {w['own_area_share']:.3f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = run(args)
    text = io.StringIO()
    with redirect_stdout(text):
        report(out)
    print(text.getvalue(), end="")
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.model.rstrip("/")).name
    (folder / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (folder / f"{name}.txt").write_text(f"$ python benchmarks/explain_masks.py {' '.join(argv or sys.argv[1:])}\n"
                                        + text.getvalue())


if __name__ == "__main__":
    main()
