"""Benchmark: how many trials the closed loop needs to reach the accuracy random selection reaches.

Both arms run the same in-process loop (bench/loop.py) on the same virtual
cortex, pools, seeds, trial budget and training steps per trial; they differ
only in how images are chosen: random natural pool images, or the closed loop
(pool images with the largest Poisson Jensen-Shannon divergence among the
ensemble members, kept diverse). Both start with the same few random warm-up
trials. Accuracy: mean over neurons of the correlation between the model's
prediction and the ground-truth rate on the held-out test images.

    python -m bench.efficiency [--trials 150] [--model baseline|compact] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

from acquisition.config import PopulationConfig
from bench.loop import LoopSetup, VirtualExperiment, run_arm, trials_to_reach
from models.config import ModelConfig
from stimulus.config import ImagesConfig
from stimulus.selection_config import SelectionConfig


def parse_mix(text: str) -> dict[str, float]:
    """"selected=0.8,random=0.2" -> {"selected": 0.8, "random": 0.2}."""
    out = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        out[kind.strip()] = float(share) if share else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cortexloop bench efficiency", description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--warmup-trials", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--images-per-trial", type=int, default=5)
    ap.add_argument("--model", choices=["baseline", "compact"], default="baseline")
    ap.add_argument("--steps-per-trial", type=int, default=20, help="training steps between trials (both arms)")
    ap.add_argument("--ensemble-size", type=int, default=4)
    ap.add_argument("--neurons", type=int, default=20)
    # Disagreement (variance across bootstrap members) is the score for learning a model's parameters;
    # "js" is for telling fixed hypotheses apart (see bench/discrimination.py). Measured both: docs/selection.md.
    ap.add_argument("--objective", choices=["js", "kl", "disagreement"], default="disagreement")
    ap.add_argument("--mix", default="selected=1", help="closed-loop mix, e.g. selected=0.8,random=0.2")
    ap.add_argument("--candidates", type=int, default=512)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--size-px", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    setup = LoopSetup(images=ImagesConfig(size_px=args.size_px, pool_size=args.pool_size, test_size=200, seed=args.seed),
                      population=PopulationConfig(n_neurons=args.neurons, seed=args.seed),
                      model=ModelConfig(kind=args.model, ensemble_size=args.ensemble_size, seed=args.seed),
                      images_per_trial=args.images_per_trial, seed=args.seed)
    exp = VirtualExperiment(setup)
    arms = {"random": SelectionConfig(mix={"random": 1.0}),
            "closed_loop": SelectionConfig(mix=parse_mix(args.mix), objective=args.objective,
                                           window_ms=setup.window_s * 1000, candidates=args.candidates)}
    results = {name: run_arm(exp, name, sel, args.trials, args.steps_per_trial, args.eval_every,
                             warmup_trials=args.warmup_trials) for name, sel in arms.items()}
    rnd, cl = results["random"], results["closed_loop"]
    target = rnd.accuracy[-1]
    needed = trials_to_reach(cl.trials, cl.accuracy, target)
    ratio = None if needed is None else needed / args.trials

    print(f"Held-out accuracy (mean correlation with ground truth, {exp.population.n_neurons} neurons, "
          f"{len(exp.pools.test)} test images), model {args.model}, {args.steps_per_trial} steps/trial")
    print(f"{'trials':>7s} {'random':>8s} {'closed':>8s}")
    for t, a, b in zip(rnd.trials, rnd.accuracy, cl.accuracy):
        print(f"{t:7d} {a:8.3f} {b:8.3f}")
    print(f"random's final accuracy {target:.3f} after {args.trials} trials; closed loop reaches it after "
          f"{needed if needed is not None else 'never'} trials"
          + ("" if ratio is None else f" (ratio {ratio:.2f}, {1 / ratio:.1f}x fewer)"))
    print(f"time: random {rnd.seconds:.0f} s, closed loop {cl.seconds:.0f} s; closed-loop images: {cl.reasons}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "efficiency", "args": vars(args),
                       "arms": {n: {"trials": r.trials, "accuracy": r.accuracy, "seconds": r.seconds,
                                    "images_by_kind": r.reasons} for n, r in results.items()},
                       "random_final_accuracy": target, "closed_loop_trials_to_reach": needed,
                       "trial_ratio": ratio}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
