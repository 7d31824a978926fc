"""Benchmark: how many trials the closed loop needs to reach the accuracy random selection reaches.

Each arm is a session of the product's engine, in process, on the virtual clock
(bench/sessions.py): same virtual cortex, pools, held-out test set, trial budget,
model and training steps per trial for a given seed in every arm (paired seeds).
Arms differ in two rig keys only: which images a block shows (random pool images,
or the closed loop's choices) and which part of the pool they come from
(selection.candidates_from: natural images, gaudy ones, or both):

    random-natural        random natural pool images
    random-gaudy          random gaudy pool images (Cowley & Pillow 2020's strong simple baseline)
    random-mixed          random images from the whole pool (natural and gaudy)
    closed-loop-rig       the rig file's own [selection]: its mix, objective, candidates, cold start
                          (the default closed-loop arm; compared with random-natural)
    closed-loop-natural   the closed loop (--mix) choosing among natural images   (compared with random-natural)
    closed-loop-mixed     the closed loop (--mix) choosing among the whole pool   (compared with random-mixed)

so each closed-loop arm sees the same candidate distribution as the random arm it
is compared with (closed-loop-rig: the rig's candidates_from, "natural" in the
shipped rigs). `--rig` sets the rig file every arm starts from, its population
included (e.g. rigs/sim-selective.toml, half selective neurons); `--neurons`
and the seed are the only population keys a benchmark sets. Until the model has data the closed loop shows random images
from its candidates. Accuracy: mean over neurons of the correlation between the
model's mean prediction and the ground-truth rate on the held-out test images,
after every `--eval-every` completed trials.

Per neuron type (the population's types; sparseness measured on the natural pool
images), each arm's final held-out r; the selective types' median r over the
zoo types' median in the same run; and the share of neurons whose best shown
image (true rate) beats their best natural pool image. Per closed-loop arm, the
evaluations at which it is behind its random arm by more than the paired
difference's interval.

Figures per arm, with 95% bootstrap intervals over seeds: the area under the
held-out learning curve (the curve's mean height over the trials), the final
accuracy, and the trials needed to reach the best random arm's final accuracy
(per seed; a run that never reaches it within the budget counts as needing more
trials than it had: its ratio is infinite, medians and their intervals stay
defined). The goal: a closed-loop arm reaches it with <= 50% of the random
arm's trials (median paired ratio) and the ratio's interval excludes 100%.

    cortexloop bench efficiency [--trials 100] [--n-seeds 10] [--workers N] [--device cuda] [--json out.json]
    cortexloop bench efficiency ... --store DIR --from-store    # summarise what a (cut short) run left in DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.jobs import finite_or_none, run_jobs, settings_key
from bench.sessions import bench_rig, model_worker, predict_mean, store_dir
from bench.stats import area_under_curve, bootstrap_ci, median_with_inf, paired_ratios, trials_to_reach
from models.metrics import correlation

# arm -> (what a block shows, where its images come from)
ARMS = {
    "random-natural": ("random", "natural"),
    "random-gaudy": ("random", "gaudy"),
    "random-mixed": ("random", "both"),
    "closed-loop-rig": ("rig", "natural"),
    "closed-loop-natural": ("closed", "natural"),
    "closed-loop-mixed": ("closed", "both"),
}
DEFAULT_ARMS = ["random-natural", "random-gaudy", "random-mixed", "closed-loop-rig"]
# Each closed-loop arm against the random arm with the same candidate distribution.
MATCHED = {
    "closed-loop-rig": "random-natural",
    "closed-loop-natural": "random-natural",
    "closed-loop-mixed": "random-mixed",
}
GOAL_RATIO = 0.5
SELECTIVE_GOAL = 0.8  # selective neurons' median r over the zoo types' median
BEST_SHOWN_GOAL = 0.8  # of neurons whose best shown image drives them above their best natural pool image
MEI_GOAL_SHARE = 0.8  # of neurons whose MEI drives them above their best natural pool image
MEI_GOAL_RATIO = 0.7  # median true (observed) over predicted rate of the MEIs


def parse_mix(text: str) -> dict[str, float]:
    """ "selected=0.8,random=0.2" -> {"selected": 0.8, "random": 0.2}."""
    out = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        try:
            out[kind.strip()] = float(share) if share else 1.0
        except ValueError:
            raise SystemExit(f"--mix {text!r}: share {share!r} of {kind.strip()!r} is not a number") from None
    return out


def arm_selection(arm: str, args) -> dict:
    """The [selection] keys of an arm. Random images and the closed loop's candidates come from the same part of
    the pool in every arm (the closed loop's first images, before its model exists, are random ones from there
    too)."""
    kind, source = ARMS[arm]
    cold = getattr(args, "model_driven_after", None)
    cold = {} if cold is None or kind == "random" else {"model_driven_after": None if cold == "off" else cold}
    if kind == "rig":  # the rig file's own selection, as a session runs it (hypotheses: the ensemble's members)
        return {"hypotheses": [], **cold}
    mix = {"random": 1.0} if kind == "random" else parse_mix(args.mix)
    sel = {"mix": mix, "candidates": args.candidates, "hypotheses": [], **cold}
    if args.objective:
        sel["objective"] = args.objective
    sel["candidates_from"] = source
    sel["random_from"] = source
    return sel


def arm_rig(args, arm: str, seed: int):
    model = {"seed": seed}
    for key, value in (
        ("kind", args.model),
        ("device", args.device),
        ("ensemble_size", args.ensemble_size),
        ("steps_per_trial", args.steps_per_trial),
    ):
        if value is not None:  # unset: the rig file's
            model[key] = value
    images = {"pool_size": args.pool_size, "test_size": args.test_size, "seed": seed}
    if args.size_px is not None:
        images["size_px"] = args.size_px
    if args.gaudy_share is not None:
        images["gaudy_share"] = args.gaudy_share
    return bench_rig(
        args.rig,
        session={"n_trials": args.trials, "seed": seed},
        images=images,
        cortex={"population": {"n_neurons": args.neurons, "seed": seed}},
        model=model,
        selection={**arm_selection(arm, args), "seed": seed},
    )


def run_arm(args, arm: str, seed: int, root: Path) -> dict:
    """One arm at one seed: a session of the engine, its held-out accuracy measured every eval_every trials."""
    from controller.progress import progress_bar
    from controller.session import run_in_process

    rig = arm_rig(args, arm, seed)
    if arm == "closed-loop-rig" and rig.selection.candidates_from != "natural":
        raise SystemExit(
            f"closed-loop-rig: the rig's selection.candidates_from is {rig.selection.candidates_from!r}; it is "
            f"compared with random-natural, so it needs 'natural'"
        )
    curve = {"trials": [], "accuracy": [], "accuracy_per_neuron": []}
    truth = {}
    completed = [0]
    eval_s = [0.0]

    def evaluate(engine, trial_id):
        completed[0] += 1  # called once per completed trial, after its responses went to the model
        advance()
        done = completed[0]
        if done % args.eval_every and done != args.trials:
            return None
        t0 = time.perf_counter()
        if "test" not in truth:
            truth["test"] = engine.parts.source.population.rates(engine.pools.test)
        snap = model_worker(engine).snapshot()
        n = truth["test"].shape[1]
        per = np.zeros(n) if snap is None else correlation(predict_mean(snap, engine.pools.test), truth["test"])
        acc = float(per.mean())
        curve["trials"].append(done)
        curve["accuracy"].append(acc)
        curve["accuracy_per_neuron"].append([float(x) for x in per])
        if "population" not in truth:
            truth["population"] = engine.parts.source.population
            truth["train"] = engine.pools.train
            truth["train_kind"] = list(engine.pools.train_kind)
        eval_s[0] += time.perf_counter() - t0
        return None

    session_dir = root / f"{arm}-seed{seed}"
    t0 = time.perf_counter()
    with progress_bar(f"efficiency: {arm}, seed {seed}", args.trials, enabled=args.progress) as advance:
        summary, parts = run_in_process(rig, session_dir, after_update=evaluate)
    figures = neuron_figures(truth, session_dir)
    kinds: dict[str, int] = {}
    for reason in stored_reasons(session_dir):
        kinds[reason.split()[0]] = kinds.get(reason.split()[0], 0) + 1
    model = summary.get("model") or {}
    return {
        **curve,
        **figures,
        "mei": mei_figures(truth["population"], figures["best_natural_hz"], session_dir) if figures else None,
        "arm": arm,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "evaluation_seconds": eval_s[0],
        "images_by_kind": kinds,
        "gaudy_images": count_gaudy(session_dir, rig),
        "engine_mode": summary["engine_mode"],
        "status": summary["status"],
        "training_steps": model.get("training_steps"),
        "model_kind": rig.model.kind,
        "objective": rig.selection.objective,
        "device": rig.model.device,
    }


def neuron_figures(truth: dict, session_dir) -> dict:
    """Per neuron: its type, its sparseness over the natural pool images, and whether the best image the arm
    showed it drives it (true rate) above its best natural pool image."""
    from acquisition.population import sparseness
    from records.store import SessionStore

    pop = truth.get("population")
    if pop is None:
        return {}
    natural = truth["train"][np.asarray(truth["train_kind"]) == "natural"]
    nat_rates = pop.rates(natural)
    store = SessionStore.open(session_dir)
    try:
        hashes = sorted(set(store.responses(valid_only=False)["image_hash"]))
        shown = np.stack([store.image(h) for h in hashes]) if hashes else None
    finally:
        store.close()
    best_shown = pop.rates(shown).max(0) if shown is not None else np.full(pop.n_neurons, -np.inf)
    best_natural = nat_rates.max(0)
    return {
        "neuron_types": list(pop.types),
        "sparseness": [float(x) for x in sparseness(nat_rates, pop.baseline_hz)],
        "best_shown_hz": [float(x) for x in best_shown],
        "best_natural_hz": [float(x) for x in best_natural],
    }


def mei_figures(population, best_natural_hz, session_dir) -> dict | None:
    """The MEIs a session showed, on the true neuron: per neuron with an MEI, its MEIs' mean true rate over the
    mean rate the model predicted when it chose them (the session's own observed/predicted uses recorded counts,
    noisier; it is kept beside), and whether its best MEI drives it above its best natural pool image
    (best_natural_hz, as neuron_figures found it). None for a session that showed no MEI."""
    from records.store import SessionStore
    from stimulus.mei_hold import MEI_REASON

    store = SessionStore.open(session_dir)
    try:
        rows = store.responses(valid_only=False)
        meis: dict[int, list[tuple[float, np.ndarray]]] = {}
        for reason, h in zip(rows["reason"], rows["image_hash"]):
            hit = MEI_REASON.search(reason or "")
            if hit:
                meis.setdefault(int(hit.group(1)), []).append((float(hit.group(2)), store.image(h)))
    finally:
        store.close()
    if not meis:
        return None
    ratios, beats = {}, {}
    for j, shown in sorted(meis.items()):
        true = population.rates(np.stack([img for _, img in shown]))[:, j]
        predicted = np.mean([p for p, _ in shown])
        ratios[j] = float(true.mean() / predicted) if predicted > 0 else float("nan")
        beats[j] = bool(true.max() > best_natural_hz[j])
    summary_file = Path(session_dir) / "summary.json"
    recorded = (
        json.loads(summary_file.read_text()).get("mei_observed_over_predicted_median")
        if summary_file.exists()
        else None
    )
    finite = [r for r in ratios.values() if math.isfinite(r)]
    return {
        "neurons_with_mei": len(meis),
        "meis_shown": sum(len(v) for v in meis.values()),
        "true_over_predicted": {str(j): r for j, r in ratios.items()},
        "true_over_predicted_median": float(np.median(finite)) if finite else None,
        "recorded_over_predicted_median": recorded,
        "beats_best_natural": {str(j): b for j, b in beats.items()},
        "beats_best_natural_share": float(np.mean(list(beats.values()))),
    }


def with_mei_figures(args, run: dict, root: Path) -> dict:
    """A stored run from before the MEI figures existed gets them from its session (kept in the store)."""
    if "mei" in run or ARMS[run["arm"]][0] == "random":
        return run
    from acquisition.population import Population

    session_dir = root / f"{run['arm']}-seed{run['seed']}"
    if not session_dir.exists() or "best_natural_hz" not in run:
        return {**run, "mei": None}
    rig = arm_rig(args, run["arm"], run["seed"])
    population = Population(rig.cortex.population, rig.images.size_px, rig.images.colour)
    return {**run, "mei": mei_figures(population, run["best_natural_hz"], session_dir)}


def mei_summary(runs: list[dict]) -> dict | None:
    """Over seeds: the share of neurons (with an MEI) whose best MEI beats their best natural image, and the median
    true/predicted ratio, each with its interval; the goals beside."""
    figs = [r.get("mei") for r in runs if r.get("mei")]
    if not figs:
        return None
    share = np.array([f["beats_best_natural_share"] for f in figs])
    ratio = np.array([f["true_over_predicted_median"] for f in figs if f["true_over_predicted_median"] is not None])
    recorded = [
        f["recorded_over_predicted_median"] for f in figs if f.get("recorded_over_predicted_median") is not None
    ]
    return {
        "seeds": len(figs),
        "neurons_with_mei_mean": float(np.mean([f["neurons_with_mei"] for f in figs])),
        "meis_shown_mean": float(np.mean([f["meis_shown"] for f in figs])),
        "beats_best_natural_mean": float(share.mean()),
        "beats_best_natural_ci95": list(bootstrap_ci(share)),
        "true_over_predicted_median_mean": float(ratio.mean()) if len(ratio) else None,
        "true_over_predicted_median_ci95": list(bootstrap_ci(ratio)) if len(ratio) else None,
        "recorded_over_predicted_median_mean": float(np.mean(recorded)) if recorded else None,
        "goal": f"MEIs beat the best natural image for >= {MEI_GOAL_SHARE:.0%} of neurons, median observed/predicted "
        f">= {MEI_GOAL_RATIO}",
        "goal_met": bool(share.mean() >= MEI_GOAL_SHARE and len(ratio) and ratio.mean() >= MEI_GOAL_RATIO),
    }


def by_type(runs: list[dict]) -> dict:
    """Per neuron type over seeds: final held-out r (mean over the type's neurons), sparseness, and the share of
    neurons whose best shown image beats their best natural one; and the selective types' median r over the
    zoo types' median, per run."""
    from acquisition.config import SELECTIVE_TYPES

    if not runs or "neuron_types" not in runs[0]:
        return {}
    types = list(dict.fromkeys(runs[0]["neuron_types"]))
    out: dict = {"types": {}}
    for t in types:
        finals, sparse, beats = [], [], []
        for r in runs:
            sel = np.asarray(r["neuron_types"]) == t
            finals.append(float(np.asarray(r["accuracy_per_neuron"][-1])[sel].mean()))
            sparse.append(float(np.median(np.asarray(r["sparseness"])[sel])))
            beats.append(float((np.asarray(r["best_shown_hz"]) > np.asarray(r["best_natural_hz"]))[sel].mean()))
        out["types"][t] = {
            "neurons": int((np.asarray(runs[0]["neuron_types"]) == t).sum()),
            "final_mean": float(np.mean(finals)),
            "final_ci95": list(bootstrap_ci(np.array(finals))),
            "sparseness_median": float(np.median(sparse)),
            "best_shown_beats_best_natural": float(np.mean(beats)),
        }
    ratios = []
    for r in runs:
        kinds = np.asarray(r["neuron_types"])
        acc = np.asarray(r["accuracy_per_neuron"][-1])
        selective = np.isin(kinds, SELECTIVE_TYPES)
        if selective.any() and (~selective).any():
            zoo = float(np.median(acc[~selective]))
            ratios.append(float(np.median(acc[selective])) / zoo if zoo > 0 else float("nan"))
    if ratios:
        out["selective_over_zoo_median_r"] = ratios
        out["selective_over_zoo_mean"] = float(np.nanmean(ratios))
        out["selective_over_zoo_ci95"] = list(bootstrap_ci(np.array(ratios)))
        out["selective_goal"] = (
            f"selective neurons' median r >= {SELECTIVE_GOAL} x the zoo types' median in the same run"
        )
    beats = [float((np.asarray(r["best_shown_hz"]) > np.asarray(r["best_natural_hz"])).mean()) for r in runs]
    out["best_shown_beats_best_natural"] = beats
    out["best_shown_beats_best_natural_mean"] = float(np.mean(beats))
    return out


def stored_reasons(session_dir) -> list[str]:
    from records.store import SessionStore

    store = SessionStore.open(session_dir)
    try:
        return store.responses(valid_only=False)["reason"]
    finally:
        store.close()


def count_gaudy(session_dir, rig) -> int:
    """How many of the shown images were gaudy pool images (checks that an arm drew from what it says)."""
    from records.store import SessionStore
    from stimulus.pools import make_pools

    pools = make_pools(rig.images)
    gaudy_idx = {i for i, k in enumerate(pools.train_kind) if k == "gaudy"}
    store = SessionStore.open(session_dir)
    try:
        reasons = store.responses(valid_only=False)["reason"]
    finally:
        store.close()
    n = 0
    for r in reasons:
        hit = re.search(r"pool#(\d+)", r)
        # An evolved child is no pool image: the pool images its reason names are its parents' sources.
        if hit and "evolved evo#" not in r:
            n += int(hit.group(1)) in gaudy_idx
    return n


def job_key(args, arm: str, seed: int) -> str:
    """What a stored arm result depends on: reused by a later run only when all of it is the same."""
    keys = (
        "rig",
        "trials",
        "eval_every",
        "model",
        "device",
        "steps_per_trial",
        "ensemble_size",
        "neurons",
        "objective",
        "mix",
        "candidates",
        "pool_size",
        "test_size",
        "size_px",
        "gaudy_share",
    )
    # the rig arm runs the file's own selection: a changed rig file is a new run (settings_key keeps its text)
    return settings_key(args, keys, arm=arm, seed=seed, selection=arm_selection(arm, args))


def run_job(args, arm: str, seed: int, root: Path) -> dict:
    """One arm at one seed, or its stored result where an earlier run with the same settings left one."""
    import torch

    torch.set_num_threads(1)  # each worker process trains on one core; --workers spreads arms over cores
    key = job_key(args, arm, seed)
    done = root / f"{arm}-seed{seed}.json"
    if done.exists():
        stored = json.loads(done.read_text())
        if stored.get("key") == key and stored.get("status") == "completed":
            return {**stored, "reused": True}
    session_dir = root / f"{arm}-seed{seed}"
    if session_dir.exists():  # an earlier run was cut short here, or ran with other settings
        shutil.rmtree(session_dir)
    result = {**run_arm(args, arm, seed, root), "key": key}
    if result["status"] == "completed":  # an arm stopped part way (a signal) is run again next time
        done.write_text(json.dumps(result))
    return result


def run_all(args, arms: list[str], seeds: list[int], root: Path) -> dict[str, list[dict]]:
    jobs = [(arm, seed) for seed in seeds for arm in arms]  # seed by seed: a cut-short run has whole pairs
    results: dict[tuple[str, int], dict] = {}
    run_jobs(run_job, args, jobs, root, results, len(jobs))
    return {arm: [with_mei_figures(args, results[arm, s], root) for s in seeds] for arm in arms}


def stored_runs(args, arms: list[str], seeds: list[int], root: Path) -> tuple[dict[str, list[dict]], list[int]]:
    """The stored results for these settings, over the seeds that have every arm."""
    found = {}
    for arm in arms:
        for seed in seeds:
            path = root / f"{arm}-seed{seed}.json"
            if path.exists():
                stored = json.loads(path.read_text())
                if stored.get("key") == job_key(args, arm, seed) and stored.get("status") == "completed":
                    found[arm, seed] = {**stored, "reused": True}
    whole = [s for s in seeds if all((a, s) in found for a in arms)]
    return {arm: [with_mei_figures(args, found[arm, s], root) for s in whole] for arm in arms}, whole


def summarise(runs: dict[str, list[dict]], seeds: list[int], budget: int) -> dict:
    """Per arm and per comparison, the figures with 95% bootstrap intervals over seeds."""
    arms = list(runs)
    trials = runs[arms[0]][0]["trials"]
    for arm in arms:
        for r in runs[arm]:
            if r["trials"] != trials:
                raise ValueError(f"{arm} seed {r['seed']}: evaluated at {r['trials']}, not {trials} like the others")
    random_arms = [a for a in arms if ARMS[a][0] == "random"]
    finals = {a: np.array([r["accuracy"][-1] for r in runs[a]]) for a in arms}
    best_random = max(random_arms, key=lambda a: finals[a].mean()) if random_arms else None
    target = finals[best_random] if best_random else None  # per seed
    out = {"trials": trials, "best_random_arm": best_random, "arms": {}, "comparisons": {}}
    for arm in arms:
        acc = np.array([r["accuracy"] for r in runs[arm]])  # (seeds, evals)
        auc = np.array([area_under_curve(trials, a) for a in acc])
        band = [bootstrap_ci(acc[:, j]) for j in range(acc.shape[1])]
        s = {
            "mean_curve": acc.mean(0).tolist(),
            "curve_ci95": [list(b) for b in band],
            "auc": auc.tolist(),
            "auc_mean": float(auc.mean()),
            "auc_ci95": list(bootstrap_ci(auc)),
            "final": finals[arm].tolist(),
            "final_mean": float(finals[arm].mean()),
            "final_ci95": list(bootstrap_ci(finals[arm])),
            "seconds_mean": float(np.mean([r["seconds"] for r in runs[arm]])),
            "training_steps": [r["training_steps"] for r in runs[arm]],
            "images_by_kind": runs[arm][0]["images_by_kind"],
            "gaudy_images_mean": float(np.mean([r["gaudy_images"] for r in runs[arm]])),
            "by_type": by_type(runs[arm]),
            "mei": mei_summary(runs[arm]),
        }
        if target is not None:
            need = [trials_to_reach(trials, a, t) for a, t in zip(acc, target)]
            steps = [np.inf if n is None else n for n in need]
            s.update(
                {
                    "trials_to_target": need,
                    "reached": sum(n is not None for n in need),
                    "trials_to_target_median": finite_or_none(median_with_inf(steps)),
                    "trials_to_target_median_ci95": [finite_or_none(x) for x in bootstrap_ci(steps, np.median)],
                }
            )
        out["arms"][arm] = s
    for closed, rnd in MATCHED.items():
        if closed not in runs:
            continue
        c = {}
        if rnd in runs:
            d_auc = np.array(out["arms"][closed]["auc"]) - np.array(out["arms"][rnd]["auc"])
            d_fin = finals[closed] - finals[rnd]
            paired = np.array([r["accuracy"] for r in runs[closed]]) - np.array([r["accuracy"] for r in runs[rnd]])
            behind = [t for j, t in enumerate(trials) if bootstrap_ci(paired[:, j])[1] < 0]
            c[f"vs {rnd}"] = {
                "difference_curve": paired.mean(0).tolist(),
                "difference_curve_ci95": [list(bootstrap_ci(paired[:, j])) for j in range(paired.shape[1])],
                "behind_at_trials": behind,
                "never_behind": not behind,
                "auc_difference": d_auc.tolist(),
                "auc_difference_mean": float(d_auc.mean()),
                "auc_difference_ci95": list(bootstrap_ci(d_auc)),
                "final_difference_mean": float(d_fin.mean()),
                "final_difference_ci95": list(bootstrap_ci(d_fin)),
            }
        if best_random:
            ratios = paired_ratios(
                out["arms"][closed]["trials_to_target"], out["arms"][best_random]["trials_to_target"]
            )
            defined = [x for x in ratios if not math.isnan(x)]
            med = median_with_inf(defined) if defined else float("nan")
            lo, hi = bootstrap_ci(defined, np.median) if defined else (float("nan"), float("nan"))
            c[f"trial ratio vs {best_random}"] = {
                "per_seed": [finite_or_none(x) for x in ratios],
                "never_reached": sum(math.isinf(x) for x in ratios),
                "median": finite_or_none(med),
                "median_ci95": [finite_or_none(lo), finite_or_none(hi)],
                "median_is_never": math.isinf(med),
                "ci_high_is_never": math.isinf(hi),
                "goal": f"median <= {GOAL_RATIO:.0%} of the random arm's trials, 95% interval below 100%",
                "goal_met": bool(defined) and med <= GOAL_RATIO and hi < 1.0,
            }
        out["comparisons"][closed] = c
    return out


def goal_figures(summ: dict) -> dict:
    """Per closed-loop arm: the median paired trial ratio against the best random arm, its interval, and whether
    the goal (<= 50%, interval below 100%) is met; None ratios mean "never reached within the budget"."""
    out = {}
    for closed, comps in summ["comparisons"].items():
        for name, c in comps.items():
            if "median" in c:
                out[closed] = {
                    "against": summ["best_random_arm"],
                    "median_trial_ratio": c["median"],
                    "ci95": c["median_ci95"],
                    "never_reached": c["never_reached"],
                    "seeds": len(c["per_seed"]),
                    "goal": c["goal"],
                    "met": c["goal_met"],
                }
    for arm, s in summ["arms"].items():
        bt, mei = s.get("by_type") or {}, s.get("mei")
        if "selective_over_zoo_mean" in bt:
            out.setdefault(arm, {})["selective_over_zoo"] = {
                "mean": bt["selective_over_zoo_mean"],
                "ci95": bt["selective_over_zoo_ci95"],
                "goal": bt["selective_goal"],
                "met": bt["selective_over_zoo_mean"] >= SELECTIVE_GOAL,
            }
        if bt.get("best_shown_beats_best_natural"):
            share = bt["best_shown_beats_best_natural_mean"]
            out.setdefault(arm, {})["best_shown_beats_best_natural"] = {
                "mean": share,
                "ci95": list(bootstrap_ci(np.array(bt["best_shown_beats_best_natural"]))),
                "goal": f"the best image shown drives the neuron above its best natural pool image for >= "
                f"{BEST_SHOWN_GOAL:.0%} of neurons",
                "met": share >= BEST_SHOWN_GOAL,
            }
        if mei:
            out.setdefault(arm, {})["mei"] = {k: mei[k] for k in mei if k != "seeds"}
    return out


def print_table(summ: dict, args, seeds) -> None:
    trials = summ["trials"]
    arms = list(summ["arms"])
    print(
        f"Held-out accuracy (mean correlation of the model's prediction with the true rates on {args.test_size} "
        f"held-out images, {args.neurons} neurons), {len(seeds)} paired seeds, {args.trials} trials, model "
        f"{summ.get('model_kind')}, {args.steps_per_trial} training steps/trial, objective {summ.get('objective')}"
    )
    print(f"{'trials':>7s} " + " ".join(f"{a:>20s}" for a in arms))
    for j, t in enumerate(trials):
        print(f"{t:7d} " + " ".join(f"{summ['arms'][a]['mean_curve'][j]:20.3f}" for a in arms))
    print()
    best = summ["best_random_arm"]
    print(f"{'arm':22s} {'area under curve':>22s} {'final accuracy':>22s} {'trials to ' + str(best) + ' final':>34s}")
    for a in arms:
        s = summ["arms"][a]
        lo, hi = s["auc_ci95"]
        flo, fhi = s["final_ci95"]
        med = s.get("trials_to_target_median")
        tlo, thi = s.get("trials_to_target_median_ci95", [None, None])
        n = lambda x: "n/a" if x is None else x if isinstance(x, str) else f"{x:.0f}"  # noqa: E731
        ttt = f"{n(med)} [{n(tlo)}, {n(thi)}] ({s.get('reached')}/{len(seeds)} reached)"
        print(
            f"{a:22s} {s['auc_mean']:8.3f} [{lo:.3f}, {hi:.3f}] {s['final_mean']:8.3f} [{flo:.3f}, {fhi:.3f}] {ttt:>34s}"
        )
    for closed, comps in summ["comparisons"].items():
        for name, c in comps.items():
            if "median" in c:
                m, (lo, hi) = c["median"], c["median_ci95"]
                fmt = lambda x: "n/a" if x is None else x if isinstance(x, str) else f"{x:.0%}"  # noqa: E731
                print(
                    f"{closed} {name}: median {fmt(m)} of the trials [95% {fmt(lo)}, {fmt(hi)}], "
                    f"{c['never_reached']} of {len(c['per_seed'])} seeds never reached it; goal "
                    f"{'met' if c['goal_met'] else 'NOT met'} ({c['goal']})"
                )
            else:
                lo, hi = c["auc_difference_ci95"]
                print(f"{closed} {name}: area difference {c['auc_difference_mean']:+.3f} [95% {lo:+.3f}, {hi:+.3f}]")
                behind = c["behind_at_trials"]
                print(f"{closed} {name}: behind by more than the interval at trials {behind or 'none'}")
    for a in arms:
        bt = summ["arms"][a].get("by_type") or {}
        if not bt:
            continue
        print(f"{a}: per neuron type (final held-out r [95%], sparseness, best shown beats best natural)")
        for t, f in bt["types"].items():
            lo, hi = f["final_ci95"]
            print(
                f"  {t:18s} n={f['neurons']:<3d} r {f['final_mean']:.3f} [{lo:.3f}, {hi:.3f}]  sparseness "
                f"{f['sparseness_median']:.3f}  beats {f['best_shown_beats_best_natural']:.0%}"
            )
        if "selective_over_zoo_mean" in bt:
            lo, hi = bt["selective_over_zoo_ci95"]
            print(
                f"  selective / zoo median r: {bt['selective_over_zoo_mean']:.2f} [{lo:.2f}, {hi:.2f}] (goal >= {SELECTIVE_GOAL})"
            )
        mei = summ["arms"][a].get("mei")
        if mei:
            lo, hi = mei["beats_best_natural_ci95"]
            rlo, rhi = mei["true_over_predicted_median_ci95"] or [math.nan, math.nan]
            ratio = mei["true_over_predicted_median_mean"]
            print(
                f"  MEIs ({mei['meis_shown_mean']:.0f} a session, {mei['neurons_with_mei_mean']:.0f} neurons): best MEI "
                f"beats best natural image for {mei['beats_best_natural_mean']:.0%} [{lo:.0%}, {hi:.0%}] of neurons; "
                f"median true/predicted {ratio if ratio is not None else math.nan:.2f} [{rlo:.2f}, {rhi:.2f}] "
                f"(goal {'met' if mei['goal_met'] else 'NOT met'}: {mei['goal']})"
            )


def plot_curves(summ: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "random-natural": "#4C72B0",
        "random-gaudy": "#DD8452",
        "random-mixed": "#8172B3",
        "closed-loop-natural": "#55A868",
        "closed-loop-mixed": "#C44E52",
        "closed-loop-rig": "#2CA02C",
    }
    fig, ax = plt.subplots(figsize=(7, 4.2))
    t = summ["trials"]
    for arm, s in summ["arms"].items():
        lo = [b[0] for b in s["curve_ci95"]]
        hi = [b[1] for b in s["curve_ci95"]]
        style = "-" if arm.startswith("closed") else "--"
        ax.plot(t, s["mean_curve"], style, color=colours.get(arm), label=f"{arm} (area {s['auc_mean']:.3f})")
        ax.fill_between(t, lo, hi, color=colours.get(arm), alpha=0.18, lw=0)
    ax.set_xlabel("trials")
    ax.set_ylabel("held-out accuracy (mean r with true rate)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench efficiency` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench efficiency", description=__doc__.split("\n")[0])
    ap.add_argument("--rig", help="rig file the arms start from (default rigs/sim.toml)")
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--model", help="model.kind (default: the rig file's, the product's online model)")
    ap.add_argument("--device", help="model.device (cpu, cuda, auto; default: the rig file's)")
    ap.add_argument(
        "--steps-per-trial", type=int, help="training steps between trials (every arm; default: the rig file's)"
    )
    ap.add_argument("--ensemble-size", type=int, help="default: the rig file's")
    ap.add_argument("--neurons", type=int, help="default: the rig file's population size")
    ap.add_argument("--objective", help="selection.objective of the closed loop (default: the rig file's)")
    ap.add_argument(
        "--candidates-from",
        choices=["natural", "gaudy", "both"],
        help="run only the arms whose images come from here (selection.candidates_from)",
    )
    ap.add_argument("--mix", default="selected=1", help="closed-loop mix, e.g. selected=0.8,random=0.2")
    ap.add_argument(
        "--model-driven-after",
        type=lambda text: "off" if text == "off" else float(text),
        help="selection.model_driven_after of the closed-loop arms (the cold start; 'off': none, the model "
        "chooses from its first version; default: the rig file's)",
    )
    ap.add_argument("--candidates", type=int, default=512, help="candidate images scored per choice")
    ap.add_argument("--pool-size", type=int, help="default: the rig file's")
    ap.add_argument("--test-size", type=int, help="default: the rig file's")
    ap.add_argument("--size-px", type=int, help="default: the rig file's")
    ap.add_argument("--gaudy-share", type=float, help="images.gaudy_share (default: the rig file's)")
    ap.add_argument("--n-seeds", type=int, default=10, help="paired seeds 0..n-1 (ignored with --seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", help="paired seeds: each runs every arm")
    ap.add_argument("--workers", type=int, default=1, help="arms run in this many processes at once")
    ap.add_argument(
        "--store",
        help="directory for the arms' sessions and per-arm results (default: a temporary "
        "one); a later run with the same --store reuses arms already done",
    )
    ap.add_argument("--json", help="write the results here (and the learning curves as a PNG beside it)")
    ap.add_argument("--progress", action="store_true", help="draw a progress bar per arm (one worker only)")
    ap.add_argument(
        "--from-store",
        action="store_true",
        help="run nothing: summarise the arms --store already holds for these settings, over the seeds "
        "that have every arm (a run cut short still gives its figures)",
    )
    args = ap.parse_args(argv)
    rig = bench_rig(args.rig)  # what is not set here is the rig file's own
    for name, value in (
        ("neurons", rig.cortex.population.n_neurons),
        ("steps_per_trial", rig.model.steps_per_trial),
        ("pool_size", rig.images.pool_size),
        ("test_size", rig.images.test_size),
    ):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.candidates_from:
        args.arms = [a for a in args.arms if ARMS[a][1] == args.candidates_from]
        if not args.arms:
            ap.error(f"--candidates-from {args.candidates_from}: none of the chosen arms draws from there")
    if args.trials < args.eval_every:
        ap.error(f"--trials {args.trials} is fewer than --eval-every {args.eval_every}")
    seeds = args.seeds if args.seeds is not None else list(range(args.n_seeds))
    if len(set(seeds)) != len(seeds):
        ap.error("--seeds: each seed once")
    for arm in args.arms:
        arm_rig(args, arm, seeds[0])  # a bad key or value is refused before anything runs
    if args.from_store and not args.store:
        ap.error("--from-store needs --store")
    root = store_dir(args.store)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.from_store:
        runs, seeds = stored_runs(args, args.arms, seeds, root)
        if not seeds:
            print(f"{root}: no seed has all of {args.arms} stored with these settings", file=sys.stderr)
            return 1
    else:
        runs = run_all(args, args.arms, seeds, root)
    wall = time.perf_counter() - t0
    summ = summarise(runs, seeds, args.trials)
    first = runs[args.arms[0]][0]
    summ.update(
        {
            "model_kind": first["model_kind"],
            "objective": next((runs[a] for a in MATCHED if a in runs), [first])[0]["objective"],
            "device": first["device"],
        }
    )
    print_table(summ, args, seeds)
    arm_seconds = [r["seconds"] for rs in runs.values() for r in rs]  # as measured when each arm ran
    print(
        f"time: {wall:.0f} s wall with {args.workers} worker(s) now; one arm at one seed took "
        f"{np.mean(arm_seconds):.0f} s on average when it ran ({os.cpu_count()} CPUs here)"
    )
    if args.json:
        out = Path(args.json)
        png = out.with_suffix(".png")
        plot_curves(
            summ,
            png,
            f"{len(seeds)} seeds, model {summ['model_kind']}, {args.steps_per_trial} steps/trial, "
            f"{args.neurons} neurons; bands: 95% bootstrap over seeds",
        )
        out.write_text(
            json.dumps(
                {
                    "benchmark": "efficiency",
                    "engine_mode": first["engine_mode"],
                    "args": vars(args),
                    "seeds": seeds,
                    "goal": goal_figures(summ),
                    "summary": summ,
                    "runs": runs,  # per arm, one entry per seed
                    "wall_seconds": wall,
                    "arm_seconds_mean": float(np.mean(arm_seconds)) if arm_seconds else None,
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
