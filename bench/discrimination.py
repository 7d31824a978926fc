"""Benchmark: trials until the true one of two hypotheses about a neuron reaches 99% posterior.

Two hand-written hypotheses about one V4-like neuron at a known receptive field:
  pair "orientation": an oriented complex cell preferring theta, or one preferring theta + delta
                     (delta 10 and 5 deg by default: natural images barely separate them);
  pair "dot":         an oriented complex cell, or a centre-surround "dot detector".
Both predict similar rates on average natural images (each is calibrated so the
median natural image drives it half way), so natural images discriminate them
only weakly. One is true: the virtual cortex's one neuron fires by it (spikes
from the simulated recording system, binned by the engine in the rig's response
window, Fano factor 1.2). Each repeat and arm is a session of the product's
engine, in process, on the virtual clock (bench/sessions.py): each trial shows 5
images, and the model worker's evidence tracker updates the posterior after each
presentation; the session ends when a hypothesis reaches the threshold.

Arms, same seeds and trial cap:
  random       random natural pool images
  selected     pool images with the largest Poisson Jensen-Shannon divergence (ImageChooser, mix selected)
  synthesized  images synthesized from the best pool images to maximise it (ImageChooser, mix synthesized)
The headline is the median over repeats of trials-to-99% and the ratio random / designed, and how often
the wrong hypothesis got there first (with exact Clopper-Pearson and Wilson 95% intervals over repeats).

A truth that is neither hypothesis (--neither, on by default): the neuron fires at the mean of the two
hypotheses' rates. Every hypothesis that reaches the threshold then is a false certainty; the JSON says how
often that happens (with intervals), which hypothesis won, after how many presentations, and where the
posterior ended.

    python -m bench.discrimination [--repeats 8] [--pair orientation dot] [--delta-deg 10 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from bench.sessions import bench_rig, model_worker, store_dir
from bench.stats import clopper_pearson, wilson
from controller.progress import progress_bar
from controller.session import run_in_process
from stimulus.config import ImagesConfig
from stimulus.hypotheses import HypothesisSet
from stimulus.pools import make_pools
from stimulus.synthesis import from_pixels


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    return yy, xx


class SaturatingUnit:
    """rate = base + (peak - base) * d^2 / (1 + d^2), d = drive / (median drive on natural images).

    `drive` is a torch function of grey images (B, H, W) centred on 0; calibrate() sets the scale.
    """

    def __init__(self, base_hz: float = 5.0, peak_hz: float = 60.0):
        self.base_hz, self.peak_hz, self.scale = base_hz, peak_hz, 1.0

    def drive(self, grey: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def calibrate(self, natural: np.ndarray) -> "SaturatingUnit":
        with torch.no_grad():
            d = self.drive(from_pixels(natural).mean(1) - 0.5)
        self.scale = float(d.median()) + 1e-6
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        d = self.drive(images.mean(1) - 0.5) / self.scale
        r = self.base_hz + (self.peak_hz - self.base_hz) * d**2 / (1.0 + d**2)
        return r[:, None]  # (B, 1 neuron)


class OrientedEnergy(SaturatingUnit):
    """Complex cell: energy of a quadrature pair of Gabor filters (phase invariant)."""

    def __init__(
        self, size: int, centre: tuple[float, float], sigma_px: float, theta_rad: float, wavelength_px: float, **kw
    ):
        super().__init__(**kw)
        yy, xx = _grid(size)
        cy, cx = centre
        env = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma_px**2))
        u = (xx - cx) * math.cos(theta_rad) + (yy - cy) * math.sin(theta_rad)
        pair = torch.stack(
            [env * torch.cos(2 * math.pi * u / wavelength_px), env * torch.sin(2 * math.pi * u / wavelength_px)]
        )
        pair = pair - pair.mean(dim=(1, 2), keepdim=True)
        self.filters = pair / pair[0].norm()

    def drive(self, grey: torch.Tensor) -> torch.Tensor:
        resp = torch.einsum("bhw,khw->bk", grey, self.filters)
        return resp.pow(2).sum(1).add(1e-8).sqrt()


class DotDetector(SaturatingUnit):
    """Centre-surround (difference of Gaussians) at the RF centre, either contrast polarity."""

    def __init__(self, size: int, centre: tuple[float, float], sigma_px: float, **kw):
        super().__init__(**kw)
        yy, xx = _grid(size)
        cy, cx = centre
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        centre_g = torch.exp(-r2 / (2 * (sigma_px / 2) ** 2))
        surround = torch.exp(-r2 / (2 * sigma_px**2))
        dog = centre_g / centre_g.sum() - surround / surround.sum()
        self.filter = dog / dog.norm()

    def drive(self, grey: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bhw,hw->b", grey, self.filter).abs()


class MeanOf:
    """A neuron that is neither hypothesis: its rate is the mean of the two hypotheses' rates."""

    def __init__(self, units):
        self.units = list(units)
        self.base_hz = float(np.mean([u.base_hz for u in self.units]))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([u(images) for u in self.units]).mean(0)


def make_pair(pair: str, size: int, natural: np.ndarray, rng: np.random.Generator, delta_deg: float = 15.0) -> dict:
    centre = tuple(float(v) for v in rng.uniform(0.4, 0.6, 2) * size)
    sigma = float(rng.uniform(0.1, 0.16) * size)
    theta = float(rng.uniform(0, math.pi))
    wavelength = float(rng.uniform(0.2, 0.3) * size)
    first = OrientedEnergy(size, centre, sigma, theta, wavelength)
    if pair == "orientation":
        second = OrientedEnergy(size, centre, sigma, theta + math.radians(delta_deg), wavelength)
        names = ("theta", f"theta+{delta_deg:g}deg")
    elif pair == "dot":
        second = DotDetector(size, centre, sigma)
        names = ("oriented", "dot")
    else:
        raise ValueError(pair)
    return {names[0]: first.calibrate(natural), names[1]: second.calibrate(natural)}


class TrueNeuron:
    """The virtual cortex's one neuron, whose rates are one of the hypotheses (what VirtualCortex needs of a
    population: n_neurons, baseline_hz and rates of uint8 images)."""

    def __init__(self, unit: SaturatingUnit):
        self.unit = unit
        self.n_neurons = 1
        self.baseline_hz = np.array([unit.base_hz])

    def rates(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.unit(from_pixels(images)).double().numpy()


def first_reaching(history: list[np.ndarray], threshold: float) -> tuple[int | None, int | None]:
    """(presentation count, hypothesis) at which a posterior first reaches threshold; (None, None) if never."""
    for k, post in enumerate(history):
        best = int(np.argmax(post))
        if post[best] >= threshold:
            return k + 1, best
    return None, None


def run_case(args, fns: dict, true_index: int | None, arm: str, seed: int, root) -> dict:
    """One session of the product's engine, in process, until a hypothesis reaches the threshold posterior.
    true_index None: the neuron is neither hypothesis (MeanOf both)."""
    rig = bench_rig(
        args.rig,
        session={"n_trials": args.max_trials, "seed": seed},
        trial={"images_per_trial": args.images_per_trial},
        images={"size_px": args.size_px, "pool_size": args.pool_size, "test_size": 20, "seed": args.seed},
        cortex={"spiking": {"fano_factor": args.fano_factor}},
        model={"kind": "baseline", "steps_per_trial": 0, "seed": seed},
        selection={
            "mix": ARMS[arm],
            "objective": "js",
            "candidates": args.candidates,
            "synthesis_steps": args.synthesis_steps,
            "synthesis_step_size": 0.05,
            "seed": seed,
            "hypotheses": [],
        },
    )
    hyps = HypothesisSet(fns, n_neurons=1)
    units = list(fns.values())
    truth = TrueNeuron(MeanOf(units) if true_index is None else units[true_index])

    def reached(engine, trial_id):
        history = model_worker(engine).evidence_history
        return "a hypothesis reached the threshold" if first_reaching(history, args.threshold)[0] else None

    t0 = time.perf_counter()
    name = f"{arm}-seed{seed}" if true_index is not None else f"{arm}-neither-seed{seed}"
    summary, parts = run_in_process(rig, root / name, population=truth, hypotheses=hyps, after_update=reached)
    history = parts.model.evidence_history
    shown, winner = first_reaching(history, args.threshold)
    if shown is None:
        shown, trials = len(history) + 1, args.max_trials + 1
    else:
        trials = (shown - 1) // args.images_per_trial + 1
    final = history[-1] if history else np.full(len(fns), 1.0 / len(fns))
    return {
        "trials": trials,
        "presentations": shown,
        "reached": winner is not None,
        "winner": None if winner is None else list(fns)[winner],
        "wrong": winner is not None and true_index is not None and winner != true_index,
        "posterior_true": None if true_index is None else float(final[true_index]),
        "final_posterior": [float(p) for p in final],
        "seconds": time.perf_counter() - t0,
        "engine_mode": summary["engine_mode"],
    }


def rate_with_intervals(k: int, n: int) -> dict:
    """k of n runs, as a rate with exact (Clopper-Pearson) and Wilson 95% intervals over the runs."""
    return {
        "count": k,
        "runs": n,
        "rate": k / n if n else None,
        "ci95_clopper_pearson": list(clopper_pearson(k, n)),
        "ci95_wilson": list(wilson(k, n)),
    }


def summarise_neither(runs: list[dict], names: list[str], max_trials: int) -> dict:
    """What the posterior does when the neuron is neither hypothesis: how often, which and how fast one
    reaches the threshold anyway (a false certainty), and where the posterior ended."""
    reached = [r for r in runs if r["reached"]]
    first = np.array([r["final_posterior"][0] for r in runs])
    return {
        "false_certainty": rate_with_intervals(len(reached), len(runs)),
        "winners": {n: sum(r["winner"] == n for r in reached) for n in names},
        "median_presentations_to_false_certainty": float(np.median([r["presentations"] for r in reached]))
        if reached
        else None,
        "final_posterior_of_first": first.tolist(),
        "names": names,
        # Runs that reached the cap with no hypothesis at the threshold: the honest outcome here.
        "never_reached": len(runs) - len(reached),
        "runs": runs,
        "cap_trials": max_trials,
    }


ARMS = {
    "random": {"random": 1.0},
    "selected": {"selected": 1.0},
    "synthesized": {"synthesized": 1.0},
}


def track(items, description: str, total: int):
    with progress_bar(description, total) as advance:
        for item in items:
            yield item
            advance()


def run(args) -> dict:
    images = ImagesConfig(size_px=args.size_px, pool_size=args.pool_size, test_size=20, seed=args.seed)
    pools = make_pools(images)
    natural = pools.train[np.asarray(pools.train_kind) == "natural"]
    root = store_dir(args.store)
    results = {}
    cases = [(f"orientation{d:g}deg", "orientation", d) for d in args.delta_deg if "orientation" in args.pair]
    cases += [("dot", "dot", 0.0)] if "dot" in args.pair else []
    for label, pair, delta in cases:
        per_arm = {arm: [] for arm in args.arms}
        neither = {arm: [] for arm in args.arms}
        corr = []
        for rep in track(range(args.repeats), f"discrimination: {label}", args.repeats):
            rng = np.random.default_rng([args.seed, rep])
            fns = make_pair(pair, args.size_px, natural, rng, delta)
            hyps = HypothesisSet(fns, n_neurons=1)
            with torch.no_grad():
                r = hyps.rates(from_pixels(natural[:500])).numpy()[:, :, 0]
            corr.append(float(np.corrcoef(r[0], r[1])[0, 1]))
            true_index = rep % 2  # each hypothesis is the true one in half the repeats
            for arm in args.arms:
                per_arm[arm].append(run_case(args, fns, true_index, arm, args.seed * 1000 + rep, root / label))
                if args.neither:
                    neither[arm].append(run_case(args, fns, None, arm, args.seed * 1000 + rep, root / label))
            names = list(fns)
        summary = {
            arm: {
                "median_trials": float(np.median([x["trials"] for x in runs])),
                "median_presentations": float(np.median([x["presentations"] for x in runs])),
                "wrong": sum(x["wrong"] for x in runs),
                "wrong_rate": rate_with_intervals(sum(x["wrong"] for x in runs), len(runs)),
                "runs": runs,
                "capped": sum(x["trials"] > args.max_trials for x in runs),
            }
            for arm, runs in per_arm.items()
        }
        for arm in args.arms:
            if arm != "random" and "random" in summary:
                summary[arm]["ratio_random_over_this"] = (
                    summary["random"]["median_trials"] / summary[arm]["median_trials"]
                )
                summary[arm]["presentation_ratio_random_over_this"] = (
                    summary["random"]["median_presentations"] / summary[arm]["median_presentations"]
                )
        results[label] = {"arms": summary, "natural_image_correlation": float(np.mean(corr))}
        if args.neither:
            results[label]["neither"] = {
                arm: summarise_neither(runs, names, args.max_trials) for arm, runs in neither.items()
            }
    return results


def print_table(results: dict, args) -> None:
    print(
        f"Trials ({args.images_per_trial} images each) and presentations until a hypothesis reaches "
        f"{args.threshold:.0%} posterior; medians of {args.repeats} repeats (cap {args.max_trials} trials)"
    )
    print(
        f"{'pair':18s} {'arm':12s} {'trials':>6s} {'min':>4s} {'max':>4s} {'capped':>6s} {'wrong':>5s} {'ratio':>6s} "
        f"{'images':>7s} {'ratio':>6s} {'s/run':>6s}"
    )
    for pair, res in results.items():
        for arm, s in res["arms"].items():
            t = [x["trials"] for x in s["runs"]]
            ratio = s.get("ratio_random_over_this")
            pratio = s.get("presentation_ratio_random_over_this")
            secs = np.mean([x["seconds"] for x in s["runs"]])
            print(
                f"{pair:18s} {arm:12s} {s['median_trials']:6.1f} {min(t):4d} {max(t):4d} {s['capped']:6d} {s['wrong']:5d} "
                f"{'' if ratio is None else f'{ratio:.1f}x':>6s} {s['median_presentations']:7.1f} "
                f"{'' if pratio is None else f'{pratio:.1f}x':>6s} {secs:6.2f}"
            )
        print(
            f"{pair:18s} (correlation of the two hypotheses on natural images: {res['natural_image_correlation']:.2f})"
        )
    print(
        "ratio = random's median / this arm's median (trials, then presentations); wrong = runs in which the "
        "false hypothesis reached the threshold first"
    )
    print(f"\nHow often the wrong hypothesis reached {args.threshold:.0%} (95% Clopper-Pearson interval over repeats)")
    for pair, res in results.items():
        for arm, s in res["arms"].items():
            w = s["wrong_rate"]
            lo, hi = w["ci95_clopper_pearson"]
            print(f"{pair:18s} {arm:12s} {w['count']}/{w['runs']} = {w['rate']:.0%} [{lo:.0%}, {hi:.0%}]")
    if any("neither" in res for res in results.values()):
        print(
            f"\nNeither hypothesis true (the neuron fires at their mean): runs in which one reached "
            f"{args.threshold:.0%} anyway (a false certainty), which, and how fast"
        )
        for pair, res in results.items():
            for arm, s in res.get("neither", {}).items():
                f = s["false_certainty"]
                lo, hi = f["ci95_clopper_pearson"]
                med = s["median_presentations_to_false_certainty"]
                print(
                    f"{pair:18s} {arm:12s} {f['count']}/{f['runs']} = {f['rate']:.0%} [{lo:.0%}, {hi:.0%}]; "
                    f"winners {s['winners']}; median {'-' if med is None else f'{med:.0f}'} presentations; "
                    f"{s['never_reached']} stayed below it up to the cap"
                )


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench discrimination` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench discrimination", description=__doc__.split("\n")[0])
    ap.add_argument("--pair", nargs="+", default=["orientation", "dot"], choices=["orientation", "dot"])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument(
        "--delta-deg",
        type=float,
        nargs="+",
        default=[10.0, 5.0],
        help="orientation differences to try for the 'orientation' pair",
    )
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--max-trials", type=int, default=400)
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument(
        "--neither",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run each repeat with a neuron that is neither hypothesis (the mean of both)",
    )
    ap.add_argument("--images-per-trial", type=int, default=5)
    ap.add_argument("--fano-factor", type=float, default=1.2)
    ap.add_argument("--candidates", type=int, default=512)
    ap.add_argument("--synthesis-steps", type=int, default=20)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--size-px", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rig", help="rig file the sessions start from (default rigs/sim.toml)")
    ap.add_argument("--store", help="directory for the sessions (default: a temporary one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    results = run(args)
    print_table(results, args)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"benchmark": "discrimination", "engine_mode": "in-process", "args": vars(args), "results": results},
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
