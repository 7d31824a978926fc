"""Benchmark: do the model's most exciting images (MEIs) drive the real neurons harder than natural images?

The online model is fitted on the virtual cortex's responses to random natural
pool images (same counts model as bench/loop.py), then
stimulus.synthesis.most_exciting_images synthesizes one image per neuron.
Per neuron, the ground-truth rate to its MEI is compared with
  - the best natural pool image by ground truth (the strictest reference), and
  - the pool image the model itself ranks best for that neuron (what the model could pick without synthesis).
Reported: the fraction of neurons where the MEI wins, and the median ratios.

    python -m bench.mei [--presentations 1500] [--steps 200] [--model baseline|compact] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from acquisition.config import PopulationConfig
from bench.loop import LoopSetup, VirtualExperiment, draw_counts, predict_mean
from models.config import ModelConfig
from models.factory import make_online_model
from stimulus.config import ImagesConfig
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    setup = LoopSetup(images=ImagesConfig(size_px=args.size_px, pool_size=args.pool_size, test_size=200, seed=args.seed),
                      population=PopulationConfig(n_neurons=args.neurons, seed=args.seed),
                      model=ModelConfig(kind=args.model, ensemble_size=args.ensemble_size, seed=args.seed),
                      seed=args.seed)
    exp = VirtualExperiment(setup)
    pop, pools = exp.population, exp.pools
    natural = np.flatnonzero(np.asarray(pools.train_kind) == "natural")
    rng = np.random.default_rng([args.seed, 3])

    model = make_online_model(setup.model, pop.n_neurons, exp.image_shape)
    shown = rng.choice(natural, min(args.presentations, len(natural)), replace=len(natural) < args.presentations)
    counts = draw_counts(pop.rates(pools.train[shown]), setup.window_s, setup.fano_factor, rng)
    model.add_responses(pools.train[shown], counts, setup.window_s)
    model.train(args.train_steps)
    predictor = model.snapshot()
    accuracy = exp.test_accuracy(predictor)
    t_fit = time.perf_counter() - t0

    neurons = list(range(pop.n_neurons))
    pool_pred = predict_mean(predictor, pools.train[natural])  # (P, N)
    model_pick = natural[pool_pred.argmax(0)]  # per neuron
    init = pools.train[model_pick] if args.start == "pool" else None
    t1 = time.perf_counter()
    meis = most_exciting_images(predictor, neurons, exp.image_shape, steps=args.steps, seed=args.seed, init=init)
    t_mei = time.perf_counter() - t1

    diag = np.arange(pop.n_neurons)
    true_mei = pop.rates(meis)[diag, diag]
    true_pool = pop.rates(pools.train[natural])
    best_natural = true_pool.max(0)
    model_pick_true = true_pool[pool_pred.argmax(0), diag]
    wins = true_mei > best_natural
    print(f"MEIs from the {args.model} model fitted on {len(shown)} random natural images "
          f"(held-out accuracy {accuracy:.3f}); {args.steps} steps from {args.start}")
    print(f"{'neuron':>6s} {'MEI Hz':>8s} {'best natural Hz':>16s} {'model pick Hz':>14s} {'MEI wins':>8s}")
    for n in neurons:
        print(f"{n:6d} {true_mei[n]:8.1f} {best_natural[n]:16.1f} {model_pick_true[n]:14.1f} {'yes' if wins[n] else 'no':>8s}")
    summary = {
        "fraction_mei_beats_best_natural": float(wins.mean()),
        "fraction_mei_beats_model_pick": float((true_mei > model_pick_true).mean()),
        "median_ratio_mei_over_best_natural": float(np.median(true_mei / best_natural)),
        "median_ratio_model_pick_over_best_natural": float(np.median(model_pick_true / best_natural)),
        "model_test_accuracy": accuracy,
        "seconds_fit": t_fit,
        "seconds_meis": t_mei,
    }
    print(f"MEI beats the best natural image for {wins.mean():.0%} of neurons "
          f"(beats the model's own pool pick for {summary['fraction_mei_beats_model_pick']:.0%}); "
          f"median MEI / best natural {summary['median_ratio_mei_over_best_natural']:.2f}; "
          f"fit {t_fit:.0f} s, MEIs {t_mei:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "mei", "args": vars(args), "summary": summary,
                       "per_neuron": {"mei_hz": true_mei.tolist(), "best_natural_hz": best_natural.tolist(),
                                      "model_pick_hz": model_pick_true.tolist()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
