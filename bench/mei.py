"""Benchmark: do the model's most exciting images (MEIs) drive the real neurons harder than natural images?

The online model is fitted by a session of the product's engine, in process, on
the virtual clock (bench/sessions.py): random natural pool images, the virtual
cortex's spikes binned in the rig's response window, the model worker training
`--steps-per-trial` steps between trials and `--train-steps` more at the end.
Then stimulus.synthesis.most_exciting_images synthesizes one image per neuron
from that model.
Per neuron, the ground-truth rate to its MEI is compared with
  - the best natural pool image by ground truth (the strictest reference), and
  - the pool image the model itself ranks best for that neuron (what the model could pick without synthesis).
Reported: the fraction of neurons where the MEI wins, and the median ratios.

    cortexloop bench mei [--presentations 1500] [--steps 200] [--model baseline|compact] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.sessions import bench_rig, mean_correlation, predict_mean, store_dir
from controller.progress import progress_bar
from controller.session import run_in_process
from stimulus.synthesis import most_exciting_images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cortexloop bench mei", description=__doc__.split("\n")[0])
    ap.add_argument("--presentations", type=int, default=1500, help="random natural images shown before synthesis")
    ap.add_argument("--model", choices=["baseline", "compact"], default="baseline")
    ap.add_argument("--train-steps", type=int, default=2000, help="training steps after the data are in")
    ap.add_argument("--steps", type=int, default=200, help="gradient steps per MEI")
    ap.add_argument("--start", choices=["noise", "pool"], default="noise",
                    help="MEIs start from noise, or from the pool image the model ranks best for the neuron")
    ap.add_argument("--neurons", type=int, default=20)
    ap.add_argument("--ensemble-size", type=int, default=4)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--size-px", type=int, default=32)
    ap.add_argument("--steps-per-trial", type=int, default=20, help="training steps between trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rig", help="rig file the session starts from (default rigs/sim.toml)")
    ap.add_argument("--store", help="directory for the session (default: a temporary one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    images_per_trial = 5
    rig = bench_rig(args.rig, session={"n_trials": -(-args.presentations // images_per_trial), "seed": args.seed},
                    trial={"images_per_trial": images_per_trial},
                    images={"size_px": args.size_px, "pool_size": args.pool_size, "test_size": 200, "seed": args.seed},
                    cortex={"population": {"n_neurons": args.neurons, "seed": args.seed}},
                    model={"kind": args.model, "ensemble_size": args.ensemble_size,
                           "steps_per_trial": args.steps_per_trial, "seed": args.seed},
                    selection={"mix": {"random": 1.0}, "seed": args.seed, "hypotheses": []})
    with progress_bar("mei: fitting the model through the engine", rig.session.n_trials) as advance:
        summary, parts = run_in_process(rig, store_dir(args.store) / "fit", after_update=lambda e, t: advance())
    worker, pop = parts.model, parts.source.population
    worker.model.train(args.train_steps)
    predictor = worker.snapshot()
    pools = worker.pools
    accuracy = mean_correlation(predict_mean(predictor, pools.test), pop.rates(pools.test))
    t_fit = time.perf_counter() - t0
    natural = np.flatnonzero(np.asarray(pools.train_kind) == "natural")
    image_shape = tuple(pools.train.shape[1:])
    shown = summary["images_shown"]

    neurons = list(range(pop.n_neurons))
    pool_pred = predict_mean(predictor, pools.train[natural])  # (P, N)
    model_pick = natural[pool_pred.argmax(0)]  # per neuron
    init = pools.train[model_pick] if args.start == "pool" else None
    t1 = time.perf_counter()
    meis = most_exciting_images(predictor, neurons, image_shape, steps=args.steps, seed=args.seed, init=init)
    t_mei = time.perf_counter() - t1

    diag = np.arange(pop.n_neurons)
    true_mei = pop.rates(meis)[diag, diag]
    true_pool = pop.rates(pools.train[natural])
    best_natural = true_pool.max(0)
    model_pick_true = true_pool[pool_pred.argmax(0), diag]
    wins = true_mei > best_natural
    print(f"MEIs from the {args.model} model fitted by the engine ({summary['engine_mode']}) on {shown} random "
          f"natural images "
          f"(held-out accuracy {accuracy:.3f}); {args.steps} steps from {args.start}")
    print(f"{'neuron':>6s} {'MEI Hz':>8s} {'best natural Hz':>16s} {'model pick Hz':>14s} {'MEI wins':>8s}")
    for n in neurons:
        print(f"{n:6d} {true_mei[n]:8.1f} {best_natural[n]:16.1f} {model_pick_true[n]:14.1f} {'yes' if wins[n] else 'no':>8s}")
    result = {
        "engine_mode": summary["engine_mode"],
        "training_steps": (summary.get("model") or {}).get("training_steps"),
        "fraction_mei_beats_best_natural": float(wins.mean()),
        "fraction_mei_beats_model_pick": float((true_mei > model_pick_true).mean()),
        "median_ratio_mei_over_best_natural": float(np.median(true_mei / best_natural)),
        "median_ratio_model_pick_over_best_natural": float(np.median(model_pick_true / best_natural)),
        "model_test_accuracy": accuracy,
        "seconds_fit": t_fit,
        "seconds_meis": t_mei,
    }
    print(f"MEI beats the best natural image for {wins.mean():.0%} of neurons "
          f"(beats the model's own pool pick for {result['fraction_mei_beats_model_pick']:.0%}); "
          f"median MEI / best natural {result['median_ratio_mei_over_best_natural']:.2f}; "
          f"fit {t_fit:.0f} s, MEIs {t_mei:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "mei", "engine_mode": summary["engine_mode"], "args": vars(args), "summary": result,
                       "per_neuron": {"mei_hz": true_mei.tolist(), "best_natural_hz": best_natural.tolist(),
                                      "model_pick_hz": model_pick_true.tolist()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
