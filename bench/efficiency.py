"""Benchmark: how many trials the closed loop needs to reach the accuracy random selection reaches.

Each arm is a session of the product's engine, in process, on the virtual clock
(bench/sessions.py): same virtual cortex, pools, trial budget and training steps
per trial, paired seeds; the arms differ only in the selection mix: random
natural pool images, or the closed loop (pool images the ensemble members
disagree on most, kept diverse). Until the model has data, both show random
natural images. Accuracy: mean over neurons of the correlation between the
model's prediction and the ground-truth rate on the held-out test images,
measured after every `--eval-every` completed trials.

    cortexloop bench efficiency [--trials 150] [--seeds 0 1 2] [--model baseline|compact] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.sessions import bench_rig, interval95, mean_correlation, model_worker, predict_mean, store_dir
from controller.progress import progress_bar
from controller.session import run_in_process


def parse_mix(text: str) -> dict[str, float]:
    """"selected=0.8,random=0.2" -> {"selected": 0.8, "random": 0.2}."""
    out = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        out[kind.strip()] = float(share) if share else 1.0
    return out


def trials_to_reach(trials: list[int], values: list[float], target: float) -> int | None:
    """First evaluated trial count at which `values` reaches `target` (None: never)."""
    for t, v in zip(trials, values):
        if v >= target:
            return t
    return None


def run_arm(args, name: str, mix: dict, seed: int, root) -> dict:
    rig = bench_rig(args.rig, session={"n_trials": args.trials, "seed": seed},
                    images={"size_px": args.size_px, "pool_size": args.pool_size, "test_size": args.test_size,
                            "seed": seed},
                    cortex={"population": {"n_neurons": args.neurons, "seed": seed}},
                    model={"kind": args.model, "ensemble_size": args.ensemble_size,
                           "steps_per_trial": args.steps_per_trial, "seed": seed},
                    selection={"mix": mix, "objective": args.objective, "candidates": args.candidates,
                               "seed": seed, "hypotheses": []})
    curve = {"trials": [], "accuracy": []}
    truth = {}
    completed = [0]

    def evaluate(engine, trial_id):
        completed[0] += 1  # called once per completed trial, after its responses went to the model
        advance()
        done = completed[0]
        if done % args.eval_every and done != args.trials:
            return None
        if "test" not in truth:
            truth["test"] = engine.parts.source.population.rates(engine.pools.test)
        snap = model_worker(engine).snapshot()
        acc = 0.0 if snap is None else mean_correlation(predict_mean(snap, engine.pools.test), truth["test"])
        curve["trials"].append(done)
        curve["accuracy"].append(acc)
        return None

    t0 = time.perf_counter()
    with progress_bar(f"efficiency: {name}, seed {seed}", args.trials) as advance:
        summary, parts = run_in_process(rig, root / f"{name}-seed{seed}", after_update=evaluate)
    reasons: dict[str, int] = {}
    for kind in (r.split()[0] for r in summary_reasons(root / f"{name}-seed{seed}")):
        reasons[kind] = reasons.get(kind, 0) + 1
    return {**curve, "seconds": time.perf_counter() - t0, "images_by_kind": reasons,
            "engine_mode": summary["engine_mode"], "status": summary["status"],
            "training_steps": (summary.get("model") or {}).get("training_steps")}


def summary_reasons(session_dir) -> list[str]:
    from controller.store import SessionStore

    store = SessionStore.open(session_dir)
    try:
        return store.responses(valid_only=False)["reason"]
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cortexloop bench efficiency", description=__doc__.split("\n")[0])
    ap.add_argument("--rig", help="rig file the arms start from (default rigs/sim.toml)")
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--model", choices=["baseline", "compact"], default="baseline")
    ap.add_argument("--steps-per-trial", type=int, default=20, help="training steps between trials (both arms)")
    ap.add_argument("--ensemble-size", type=int, default=4)
    ap.add_argument("--neurons", type=int, default=20)
    # Disagreement (variance across bootstrap members) is the score for learning a model's parameters;
    # "js" is for telling fixed hypotheses apart (see bench/discrimination.py).
    ap.add_argument("--objective", choices=["js", "kl", "disagreement"], default="disagreement")
    ap.add_argument("--mix", default="selected=1", help="closed-loop mix, e.g. selected=0.8,random=0.2")
    ap.add_argument("--candidates", type=int, default=512)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--size-px", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="paired seeds: each runs both arms")
    ap.add_argument("--store", help="directory for the arms' sessions (default: a temporary one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    root = store_dir(args.store)
    arms = {"random": {"random": 1.0}, "closed_loop": parse_mix(args.mix)}
    runs = {name: [run_arm(args, name, mix, seed, root) for seed in args.seeds] for name, mix in arms.items()}

    needed, finals = [], []
    for rnd, cl in zip(runs["random"], runs["closed_loop"]):
        target = rnd["accuracy"][-1]
        finals.append(target)
        needed.append(trials_to_reach(cl["trials"], cl["accuracy"], target))
    reached = [n for n in needed if n is not None]
    ratios = [n / args.trials for n in reached]
    mean_curve = {name: np.mean([r["accuracy"] for r in rs], 0).tolist() for name, rs in runs.items()}
    print(f"Held-out accuracy (mean correlation with ground truth, {args.neurons} neurons, {args.test_size} test "
          f"images), model {args.model}, {args.steps_per_trial} steps/trial, seeds {args.seeds}; "
          f"engine: {runs['random'][0]['engine_mode']}")
    print(f"{'trials':>7s} {'random':>8s} {'closed':>8s}")
    for t, a, b in zip(runs["random"][0]["trials"], mean_curve["random"], mean_curve["closed_loop"]):
        print(f"{t:7d} {a:8.3f} {b:8.3f}")
    for seed, target, n in zip(args.seeds, finals, needed):
        print(f"seed {seed}: random's final accuracy {target:.3f} after {args.trials} trials; closed loop "
              + (f"reaches it after {n} trials" if n is not None else "does not reach it within the budget"))
    if ratios:
        lo, hi = interval95(ratios)
        print(f"trial ratio closed / random: mean {np.mean(ratios):.2f} (95% interval {lo:.2f}-{hi:.2f}) over "
              f"{len(ratios)} of {len(needed)} seeds that reached it")
    print(f"time: random {sum(r['seconds'] for r in runs['random']):.0f} s, closed loop "
          f"{sum(r['seconds'] for r in runs['closed_loop']):.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "efficiency", "engine_mode": runs["random"][0]["engine_mode"], "args": vars(args),
                       "arms": runs,  # per arm, one entry per seed
                       "mean_curves": mean_curve, "random_final_accuracy": finals,
                       "closed_loop_trials_to_reach": needed,
                       "trial_ratios": ratios,
                       "sessions": str(root)}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
