"""Benchmark: does a model carried from day one (`[model] init_from`) let day two reach day one's accuracy sooner?

One animal, two recording days, paired seeds. The animal is a virtual cortex
population of `--animal-neurons` neurons (the rig file's population section:
its type shares, sparseness and custom types; seeded by the paired seed). Each
day's electrode placement records `--neurons` of them, drawn afresh from the
animal each day (a seeded draw per day, so some of day one's units come back
on day two, most do not), with that day's own spike noise, image choices and
model seed; the image pool and the held-out test images are the lab's, the same
on both days. The true rates are the animal's (divisive normalization over the
whole population, recorded or not), read at the recorded units.

Every day is a session of the product's engine, in process, on the virtual
clock (bench/sessions.py), with the rig file's own settings (default
rigs/sim.toml: its mix, objective, model and training steps per trial):

    day-one            `--trials` trials; its model writes its checkpoint as `cortexloop run`'s model process
                       does (every few model versions, SESSION/checkpoints/model.pt)
    day-two-init-from  `--day-two-trials` trials on the day-two units, model.init_from = day one's session
    day-two-fresh      the same session with model.init_from unset (from scratch); paired with the one above

Accuracy: mean over the recorded units of the correlation between the model's
mean prediction and the true rate on the held-out test images, after every
`--eval-every` completed trials. The target, per seed, is day one's accuracy
after its last trial; per day-two arm and seed, the first evaluation at which
it reaches the target (a run that never reaches it within its trials counts as
needing more than it had: infinite, never a number made up at the budget's
end). Reported: each arm's median over seeds with its 95% bootstrap interval,
the paired ratio init-from / fresh (median and interval), and the paired
difference of the learning curves. The goal: day two with init_from reaches
day one's final accuracy within 30% of day one's trials (trial 30 of 100),
median over seeds, and the paired ratio's interval lies below 100%.

    cortexloop bench day-two [--trials 100] [--n-seeds 3] [--workers N] [--store DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bench.jobs import finite_or_none, run_jobs, settings_key
from bench.sessions import bench_rig, model_worker, predict_mean, store_dir
from bench.stats import area_under_curve, bootstrap_ci, median_with_inf, paired_ratios, trials_to_reach
from models.metrics import correlation

ARMS = ("day-one", "day-two-init-from", "day-two-fresh")
DAY_TWO_ARMS = ARMS[1:]
GOAL_SHARE = 0.3  # day two reaches day one's final accuracy within this share of day one's trials
DAY_TWO_SEED = 1000  # day two's seeds (spikes, images chosen, model) are the paired seed plus this


class RecordedUnits:
    """The units one day's electrodes record from an animal's population: its rates at those units (the whole
    population normalizes each unit, recorded or not). Anything a session's virtual cortex needs of a
    population: n_neurons, baseline_hz, rates(images), types."""

    def __init__(self, animal, units):
        self.animal = animal
        self.units = np.asarray(units, dtype=int)
        self.n_neurons = len(self.units)
        self.baseline_hz = np.asarray(animal.baseline_hz)[self.units]
        self.types = [animal.types[i] for i in self.units]

    def rates(self, images) -> np.ndarray:
        return self.animal.rates(images)[:, self.units]


def day_units(n_animal: int, n_units: int, seed: int, day: int) -> list[int]:
    """The units recorded on `day` (1 or 2) from an animal of n_animal neurons: a seeded draw without
    replacement, independent between days."""
    rng = np.random.default_rng([seed, day])
    return sorted(int(i) for i in rng.choice(n_animal, n_units, replace=False))


def animal(args, seed: int):
    """The animal: the rig file's population section with --animal-neurons neurons, seeded by the paired seed."""
    from acquisition.population import Population

    rig = day_rig(args, "day-one", seed, None)
    cfg = rig.cortex.population.model_copy(update={"n_neurons": args.animal_neurons, "seed": seed})
    return Population(cfg, rig.images.size_px, rig.images.colour)


def day_rig(args, arm: str, seed: int, init_from: str | None):
    """The rig of one day: the rig file's settings on the virtual clock; the day's trials and seeds; init_from."""
    day = 1 if arm == "day-one" else 2
    s = seed if day == 1 else seed + DAY_TWO_SEED
    model = {"seed": s, "init_from": init_from or ""}
    if args.steps_per_trial is not None:
        model["steps_per_trial"] = args.steps_per_trial
    images = {"seed": seed}  # the lab's image set: the same pool and test images on both days
    for key in ("pool_size", "test_size"):
        if getattr(args, key) is not None:
            images[key] = getattr(args, key)
    return bench_rig(
        args.rig,
        session={"n_trials": args.trials if day == 1 else args.day_two_trials, "seed": s},
        images=images,
        cortex={"population": {"seed": s}},  # the day's spike noise (the units come from the animal)
        model=model,
        selection={"seed": s},
    )


def run_day(args, arm: str, seed: int, root: Path) -> dict:
    """One day's session at one seed, its held-out accuracy measured every eval_every trials."""
    from controller.session import run_in_process

    pop = animal(args, seed)
    units = day_units(args.animal_neurons, args.neurons, seed, 1 if arm == "day-one" else 2)
    recorded = RecordedUnits(pop, units)
    init_from = str((root / f"day-one-seed{seed}").resolve()) if arm == "day-two-init-from" else None
    rig = day_rig(args, arm, seed, init_from)
    n_trials = rig.session.n_trials
    curve = {"trials": [], "accuracy": [], "accuracy_per_neuron": []}
    truth: dict = {}
    completed = [0]

    def evaluate(engine, trial_id):
        completed[0] += 1  # called once per completed trial, after its responses went to the model
        done = completed[0]
        if done % args.eval_every and done != n_trials:
            return None
        if "test" not in truth:
            truth["test"] = recorded.rates(engine.pools.test)
        snap = model_worker(engine).snapshot()
        per = (
            np.zeros(recorded.n_neurons)
            if snap is None
            else correlation(predict_mean(snap, engine.pools.test), truth["test"])
        )
        curve["trials"].append(done)
        curve["accuracy"].append(float(per.mean()))
        curve["accuracy_per_neuron"].append([float(x) for x in per])
        return None

    session_dir = root / f"{arm}-seed{seed}"
    t0 = time.perf_counter()
    summary, parts = run_in_process(
        rig, session_dir, population=recorded, after_update=evaluate, checkpoints=arm == "day-one"
    )
    worker = parts.model  # in process: the ModelWorker itself
    other = day_units(args.animal_neurons, args.neurons, seed, 2 if arm == "day-one" else 1)
    return {
        **curve,
        "arm": arm,
        "seed": seed,
        "units": units,
        "units_also_recorded_the_other_day": len(set(units) & set(other)),
        "neuron_types": recorded.types,
        "initialized_from": worker.initialized_from,
        "checkpoint_version": worker.checkpointed_version if arm == "day-one" else None,
        "model_version": worker.version,
        "seconds": time.perf_counter() - t0,
        "engine_mode": summary["engine_mode"],
        "status": summary["status"],
        "training_steps": (summary.get("model") or {}).get("training_steps"),
        "model_kind": rig.model.kind,
        "mix": dict(rig.selection.mix),
        "objective": rig.selection.objective,
        "device": rig.model.device,
    }


def job_key(args, arm: str, seed: int) -> str:
    """What a stored day depends on (a day two also depends on its day one)."""
    keys = ("rig", "trials", "day_two_trials", "eval_every", "steps_per_trial", "neurons", "animal_neurons")
    keys += ("pool_size", "test_size")
    return settings_key(args, keys, arm=arm, seed=seed)


def run_job(args, arm: str, seed: int, root: Path) -> dict:
    """One day at one seed, or its stored result where an earlier run with the same settings left one."""
    import torch

    torch.set_num_threads(1)  # each worker process trains on one core; --workers spreads days over cores
    key = job_key(args, arm, seed)
    done = root / f"{arm}-seed{seed}.json"
    if done.exists():
        stored = json.loads(done.read_text())
        kept = arm != "day-one" or (root / f"{arm}-seed{seed}" / "checkpoints" / "model.pt").is_file()
        if stored.get("key") == key and stored.get("status") == "completed" and kept:
            return {**stored, "reused": True}
    session_dir = root / f"{arm}-seed{seed}"
    if session_dir.exists():  # an earlier run was cut short here, or ran with other settings
        shutil.rmtree(session_dir)
    result = {**run_day(args, arm, seed, root), "key": key}
    if result["status"] == "completed":
        done.write_text(json.dumps(result))
    return result


def run_all(args, seeds: list[int], root: Path) -> dict[str, list[dict]]:
    """Every seed's day one first (day two starts from its checkpoint), then both day-two arms."""
    results: dict[tuple[str, int], dict] = {}
    n_jobs = len(ARMS) * len(seeds)
    run_jobs(run_job, args, [("day-one", s) for s in seeds], root, results, n_jobs)
    run_jobs(run_job, args, [(arm, s) for s in seeds for arm in DAY_TWO_ARMS], root, results, n_jobs)
    return {arm: [results[arm, s] for s in seeds] for arm in ARMS}


def summarise(runs: dict[str, list[dict]], day_one_trials: int) -> dict:
    """Per arm and for the day-two pair, the figures with 95% bootstrap intervals over seeds."""
    target = np.array([r["accuracy"][-1] for r in runs["day-one"]])  # per seed: day one's final accuracy
    out: dict = {"target_per_seed": target.tolist(), "target_mean": float(target.mean()), "arms": {}}
    for arm in ARMS:
        trials = runs[arm][0]["trials"]
        acc = np.array([r["accuracy"] for r in runs[arm]])  # (seeds, evaluations)
        finals = acc[:, -1]
        s = {
            "trials": trials,
            "mean_curve": acc.mean(0).tolist(),
            "curve_ci95": [list(bootstrap_ci(acc[:, j])) for j in range(acc.shape[1])],
            "final": finals.tolist(),
            "final_mean": float(finals.mean()),
            "final_ci95": list(bootstrap_ci(finals)),
            "auc_mean": float(np.mean([area_under_curve(trials, a) for a in acc])),
            "seconds_mean": float(np.mean([r["seconds"] for r in runs[arm]])),
        }
        need = [trials_to_reach(trials, a, t) for a, t in zip(acc, target)]
        steps = [math.inf if n is None else n for n in need]
        s.update(
            {
                "trials_to_day_one_final": need,
                "reached": sum(n is not None for n in need),
                "trials_to_day_one_final_median": finite_or_none(median_with_inf(steps)),
                "trials_to_day_one_final_median_ci95": [finite_or_none(x) for x in bootstrap_ci(steps, np.median)],
            }
        )
        out["arms"][arm] = s
    init, fresh = out["arms"]["day-two-init-from"], out["arms"]["day-two-fresh"]
    ratios = paired_ratios(init["trials_to_day_one_final"], fresh["trials_to_day_one_final"])
    defined = [x for x in ratios if not math.isnan(x)]
    med = median_with_inf(defined) if defined else float("nan")
    lo, hi = bootstrap_ci(defined, np.median) if defined else (float("nan"), float("nan"))
    paired = np.array([r["accuracy"] for r in runs["day-two-init-from"]]) - np.array(
        [r["accuracy"] for r in runs["day-two-fresh"]]
    )
    goal_trials = GOAL_SHARE * day_one_trials
    init_median = median_with_inf([math.inf if n is None else n for n in init["trials_to_day_one_final"]])
    out["comparison"] = {
        "trials": init["trials"],
        "difference_curve": paired.mean(0).tolist(),
        "difference_curve_ci95": [list(bootstrap_ci(paired[:, j])) for j in range(paired.shape[1])],
        "ratio_per_seed": [finite_or_none(x) for x in ratios],
        "ratio_undefined": len(ratios) - len(defined),  # fresh day two never reached day one's final accuracy
        "ratio_median": finite_or_none(med),
        "ratio_median_ci95": [finite_or_none(lo), finite_or_none(hi)],
    }
    out["goal"] = {
        "goal": f"day two with init_from reaches day one's trial-{day_one_trials} accuracy by trial "
        f"{goal_trials:g} (median over seeds), and the paired ratio init-from / fresh has its 95% interval "
        f"below 100%",
        "goal_trials": goal_trials,
        "trials_median": init["trials_to_day_one_final_median"],
        "trials_median_ci95": init["trials_to_day_one_final_median_ci95"],
        "fresh_trials_median": fresh["trials_to_day_one_final_median"],
        "fresh_trials_median_ci95": fresh["trials_to_day_one_final_median_ci95"],
        "ratio_median": finite_or_none(med),
        "ratio_median_ci95": [finite_or_none(lo), finite_or_none(hi)],
        "met": bool(init_median <= goal_trials and defined and hi < 1.0),
    }
    return out


def print_table(summ: dict, args, seeds) -> None:
    print(
        f"Held-out accuracy (mean correlation of the model's prediction with the true rates on the held-out test "
        f"images), {args.neurons} units a day of a {args.animal_neurons}-neuron animal, {len(seeds)} paired seeds; "
        f"day one {args.trials} trials, day two {args.day_two_trials}"
    )
    arms = list(summ["arms"])
    grid = sorted({t for a in arms for t in summ["arms"][a]["trials"]})
    print(f"{'trials':>7s} " + " ".join(f"{a:>18s}" for a in arms))
    for t in grid:
        cells = []
        for a in arms:
            s = summ["arms"][a]
            cells.append(f"{s['mean_curve'][s['trials'].index(t)]:18.3f}" if t in s["trials"] else f"{'':18s}")
        print(f"{t:7d} " + " ".join(cells))
    print()
    n = lambda x: "n/a" if x is None else x if isinstance(x, str) else f"{x:.0f}"  # noqa: E731
    p = lambda x: "n/a" if x is None else x if isinstance(x, str) else f"{x:.0%}"  # noqa: E731
    lo, hi = bootstrap_ci(summ["target_per_seed"])
    print(f"day one's final accuracy (the target): {summ['target_mean']:.3f} [95% {lo:.3f}, {hi:.3f}]")
    print(f"{'arm':20s} {'final accuracy':>24s} {'trials to day one final':>36s}")
    for a in arms:
        s = summ["arms"][a]
        flo, fhi = s["final_ci95"]
        med, (tlo, thi) = s["trials_to_day_one_final_median"], s["trials_to_day_one_final_median_ci95"]
        ttt = f"{n(med)} [{n(tlo)}, {n(thi)}] ({s['reached']}/{len(seeds)} reached)"
        print(f"{a:20s} {s['final_mean']:8.3f} [{flo:.3f}, {fhi:.3f}] {ttt:>36s}")
    c, g = summ["comparison"], summ["goal"]
    lo, hi = c["ratio_median_ci95"]
    print(
        f"init-from / fresh trials: median {p(c['ratio_median'])} [95% {p(lo)}, {p(hi)}] "
        f"({c['ratio_undefined']} seed(s) where fresh never reached it)"
    )
    print(f"goal {'met' if g['met'] else 'NOT met'}: {g['goal']}")


def plot_curves(summ: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"day-one": "#4C72B0", "day-two-init-from": "#2CA02C", "day-two-fresh": "#DD8452"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, s in summ["arms"].items():
        lo = [b[0] for b in s["curve_ci95"]]
        hi = [b[1] for b in s["curve_ci95"]]
        ax.plot(s["trials"], s["mean_curve"], "--" if arm == "day-one" else "-", color=colours[arm], label=arm)
        ax.fill_between(s["trials"], lo, hi, color=colours[arm], alpha=0.18, lw=0)
    ax.axhline(summ["target_mean"], color="grey", lw=0.8, ls=":", label="day one's final accuracy")
    ax.axvline(summ["goal"]["goal_trials"], color="grey", lw=0.8, ls="-.", label="goal: reached by this trial")
    ax.set_xlabel("trials")
    ax.set_ylabel("held-out accuracy (mean r with true rate)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench day-two` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench day-two", description=__doc__.split("\n")[0])
    ap.add_argument("--rig", help="rig file both days run (default rigs/sim.toml)")
    ap.add_argument("--trials", type=int, default=100, help="day one's trials")
    ap.add_argument("--day-two-trials", type=int, help="day two's trials (default: as day one)")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--neurons", type=int, help="units recorded a day (default: the rig's cortex.population.n_neurons)")
    ap.add_argument(
        "--animal-neurons", type=int, help="neurons of the animal the units come from (default 3 x --neurons)"
    )
    ap.add_argument("--steps-per-trial", type=int, help="training steps between trials (default: the rig file's)")
    ap.add_argument("--pool-size", type=int, help="default: the rig file's")
    ap.add_argument("--test-size", type=int, help="default: the rig file's")
    ap.add_argument("--n-seeds", type=int, default=3, help="paired seeds 0..n-1 (ignored with --seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", help="paired seeds: each runs day one and both day twos")
    ap.add_argument("--workers", type=int, default=1, help="sessions run in this many processes at once")
    ap.add_argument(
        "--store",
        help="directory for the sessions and per-day results (default: a temporary one); a later run with the "
        "same --store reuses days already done",
    )
    ap.add_argument("--json", help="write the results here (and the learning curves as a PNG beside it)")
    args = ap.parse_args(argv)
    if args.neurons is None:
        args.neurons = bench_rig(args.rig).cortex.population.n_neurons
    if args.animal_neurons is None:
        args.animal_neurons = 3 * args.neurons
    if args.day_two_trials is None:
        args.day_two_trials = args.trials
    if args.neurons < 1 or args.animal_neurons < args.neurons:
        ap.error("--animal-neurons must be at least --neurons, and --neurons at least 1")
    if min(args.trials, args.day_two_trials) < args.eval_every:
        ap.error(f"--trials and --day-two-trials must be at least --eval-every {args.eval_every}")
    seeds = args.seeds if args.seeds is not None else list(range(args.n_seeds))
    if len(set(seeds)) != len(seeds):
        ap.error("--seeds: each seed once")
    rig = day_rig(args, "day-one", seeds[0], None)  # a bad key or value is refused before anything runs
    if rig.model.kind != "shared":
        ap.error(f"model.init_from needs model.kind 'shared'; the rig's is {rig.model.kind!r}")
    root = store_dir(args.store)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = run_all(args, seeds, root)
    wall = time.perf_counter() - t0
    summ = summarise(runs, args.trials)
    print_table(summ, args, seeds)
    day_seconds = [r["seconds"] for rs in runs.values() for r in rs]
    print(
        f"time: {wall:.0f} s wall with {args.workers} worker(s); one day at one seed took {np.mean(day_seconds):.0f} s "
        f"on average when it ran ({os.cpu_count()} CPUs here)"
    )
    if args.json:
        out = Path(args.json)
        png = out.with_suffix(".png")
        first = runs["day-one"][0]
        plot_curves(
            summ,
            png,
            f"{len(seeds)} seeds, {args.neurons} units a day of {args.animal_neurons}, model {first['model_kind']}; "
            f"bands: 95% bootstrap over seeds",
        )
        out.write_text(
            json.dumps(
                {
                    "benchmark": "day-two",
                    "engine_mode": first["engine_mode"],
                    "args": vars(args),
                    "seeds": seeds,
                    "model_kind": first["model_kind"],
                    "mix": first["mix"],
                    "objective": first["objective"],
                    "device": first["device"],
                    "goal": summ["goal"],
                    "summary": summ,
                    "runs": runs,  # per arm, one entry per seed
                    "wall_seconds": wall,
                    "day_seconds_mean": float(np.mean(day_seconds)),
                    "cpus": os.cpu_count(),
                    "figure": str(png),
                    "sessions": str(root),
                },
                indent=1,
                default=float,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
