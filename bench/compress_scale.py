"""Benchmark: `cortexloop compress` on one machine against the same compress as Ray tasks with 1 and 2 workers.

One session, recorded from the virtual cortex of `--rig` (its pool images shown at random, spike counts drawn
from the true rates in the response window), is compressed three ways in one run:

- local: `compress_from_arrays` as `cortexloop compress SESSION` runs it (all students together, pages after);
- ray, W workers (W in `--workers`, default 1 and 2): a local Ray instance with W CPUs,
  `compress_from_arrays(runner=ray_runner(...))` as `cortexloop compress SESSION --cluster ray` runs it,
  `--neurons-per-task` neurons a task.

The teacher is trained once, before the arms; every arm reads its rates as a resumed run does, so every arm
distils the same targets and only the per-neuron work is timed. Per arm: the seconds of the per-neuron work
(local: distil, prune, retrain, evaluate and pages; ray: from the first task launched to the last result back),
seconds per neuron, CPU seconds per neuron (local: this process's; ray: the tasks' own, which a busy machine
inflates less than the wall clock), the speed-up over local, the seconds Ray took to start,
and the object store's share: (seconds to put the arrays + the workers' seconds to fetch them) / the arm's
seconds. The largest difference from the local run's held-out r^2, and the neurons whose pruned size differs
from the local run's, check that the arms computed the same.

    cortexloop bench compress-scale [--rig rigs/sim.toml] [--neurons 16] [--presentations 500]
                                    [--workers 1 2] [--neurons-per-task 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from controller.config import load_rig
from models.compress import TEACHER_RATES, compress_from_arrays, population_of
from models.compress_cluster import import_ray, ray_runner
from stimulus.pools import make_pools

WORK_STAGES = ("distil", "prune", "retrain", "evaluate", "pages")


def bench_session(rig_file: str, n_neurons: int, n_presentations: int, window_s: float = 0.15, seed: int = 0):
    """(rig, images uint8 (n, H, W, C), spike counts (n, N) in `window_s`) of a virtual cortex of `n_neurons`."""
    rig = load_rig(rig_file)
    pop = rig.cortex.population.model_copy(update={"n_neurons": n_neurons})
    rig = rig.model_copy(update={"cortex": rig.cortex.model_copy(update={"population": pop})})
    pools = make_pools(rig.images)
    rng = np.random.default_rng(seed)
    images = pools.train[rng.integers(0, len(pools.train), n_presentations)]
    counts = rng.poisson(population_of(rig).rates(images) * window_s).astype(np.float32)
    return rig, images, counts


def run(args) -> dict:
    rig, images, counts = bench_session(args.rig, args.neurons, args.presentations)
    updates = {k: v for k, v in {"distill_steps": args.distill_steps, "retrain_steps": args.retrain_steps}.items() if v}
    if updates:
        rig = rig.model_copy(update={"compression": rig.compression.model_copy(update=updates)})
    work = Path(tempfile.mkdtemp(prefix="cortexloop-compress-scale-"))
    kw = dict(ensemble_steps=args.ensemble_steps, mei_steps=args.mei_steps, log=lambda *_: None)
    arms = []
    try:
        # The teacher once (with one neuron's students, which compress needs); every arm then reads its rates.
        print("teacher ...", file=sys.stderr, flush=True)
        first = compress_from_arrays(images, counts, 0.15, rig, work / "teacher", neurons=[0], **kw)

        def with_teacher(out: Path) -> Path:
            out.mkdir()
            for name in (TEACHER_RATES, "teacher.pt"):
                shutil.copy(work / "teacher" / name, out / name)
            return out

        print(f"local: {args.neurons} neurons ...", file=sys.stderr, flush=True)
        c0 = time.process_time()
        local = compress_from_arrays(images, counts, 0.15, rig, with_teacher(work / "local"), **kw)
        cpu = time.process_time() - c0
        seconds = sum(local["stage_seconds"].get(k, 0.0) for k in WORK_STAGES)
        arms.append(
            {
                "arm": "local",
                "workers": 1,
                "torch_threads": local["torch_threads"],
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "ray_start_s": 0.0,
                "object_store_s": 0.0,
                "stage_seconds": {k: local["stage_seconds"][k] for k in WORK_STAGES},
                "max_r2_difference": 0.0,
                "form": local["distill"]["form"],
            }
        )
        ray = import_ray()
        for w in args.workers:
            out = with_teacher(work / f"ray-{w}")
            print(f"ray, {w} worker(s) ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False)
            start_s = time.perf_counter() - t0
            try:
                runner = ray_runner("ray", neurons_per_task=args.neurons_per_task)
                rep = compress_from_arrays(images, counts, 0.15, rig, out, runner=runner, **kw)
            finally:
                ray.shutdown()
            c = rep["cluster"]
            if rep["failed"] or len(rep["neurons"]) != args.neurons:
                raise RuntimeError(f"ray with {w} worker(s): neurons failed: {rep['failed']}")
            diff = max(
                abs(a[k] - b[k])
                for a, b in zip(local["neurons"], rep["neurons"])
                for k in ("r2_teacher_unpruned", "r2_teacher_pruned")
            )
            differ = [
                a["neuron"]
                for a, b in zip(local["neurons"], rep["neurons"])
                if (a["params_after"], a["filters_after"]) != (b["params_after"], b["filters_after"])
            ]
            arms.append(
                {
                    "arm": f"ray, {w} worker{'s' if w > 1 else ''}",
                    "pruned_size_differs": differ,
                    "workers": w,
                    "torch_threads": 1,
                    "seconds": c["seconds"],
                    "cpu_seconds": c["cpu_seconds"],
                    "ray_start_s": round(start_s, 2),
                    "object_store_s": round(c["object_store_put_s"] + c["object_store_get_s"], 3),
                    "object_store_mb": c["object_store_mb"],
                    "tasks": c["tasks"],
                    "task_seconds": c["task_seconds"],
                    "page_seconds": c["page_seconds"],
                    "stage_seconds": c["worker_stage_seconds"],
                    "max_r2_difference": round(float(diff), 6),
                    "form": rep["distill"]["form"],
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = arms[0]["seconds"]
    for a in arms:
        a["seconds_per_neuron"] = round(a["seconds"] / args.neurons, 3)
        a["cpu_seconds_per_neuron"] = round(a["cpu_seconds"] / args.neurons, 3)
        a["speedup"] = round(base / a["seconds"], 2)
        a["object_store_share"] = round(a["object_store_s"] / a["seconds"], 4)
    row = local["neurons"][0]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "rig": args.rig,
        "neurons": args.neurons,
        "presentations": args.presentations,
        "neurons_per_task": args.neurons_per_task,
        "steps": local["steps"],
        "distill_form": local["distill"]["form"],
        "n_distill_images": local["n_distill_images"],
        "student_spec": local["student_spec"],
        "teacher": local["teacher"],
        "median_params_after": local["goals"]["median_params_after"],
        "median_param_ratio": local["goals"]["median_param_ratio"],
        "median_teacher_to_compact": local["goals"]["median_teacher_to_compact"],
        "median_member_to_compact": local["goals"]["median_member_to_compact"],
        "params_teacher_ensemble": row["params_teacher_ensemble"],
        "teacher_seconds": first["stage_seconds"]["teacher"],
        "teacher_rates_seconds": first["stage_seconds"]["teacher_rates"],
        "load_average": os.getloadavg(),
        "arms": arms,
    }


def format_table(res: dict) -> str:
    head = (
        f"{'arm':<16} {'seconds':>8} {'s/neuron':>9} {'CPU s/neuron':>13} {'speed-up':>9} {'ray start s':>12} "
        f"{'object store s':>15} {'share':>7} {'max |dr2|':>10} {'form':>8}"
    )
    lines = [head, "-" * len(head)]
    for a in res["arms"]:
        lines.append(
            f"{a['arm']:<16} {a['seconds']:>8.1f} {a['seconds_per_neuron']:>9.2f} "
            f"{a.get('cpu_seconds_per_neuron', float('nan')):>13.2f} {a['speedup']:>8.2f}x "
            f"{a['ray_start_s']:>12.1f} {a['object_store_s']:>15.3f} {a['object_store_share']:>6.1%} "
            f"{a['max_r2_difference']:>10.4f} {a.get('form', ''):>8}"
        )
    lines.append(
        f"{res['neurons']} neurons, {res['neurons_per_task']} a task; students {res['student_spec']['filters']} "
        f"filters at {res['student_spec']['image_size']} px; {res['n_distill_images']} distillation images; "
        f"teacher {res['teacher_seconds']:.0f} s once (not in the arms)"
    )
    lines.append(
        f"teacher {res['params_teacher_ensemble']:,} parameters ({res['teacher']['members']} members of "
        f"{res['teacher']['params_member']:,}); compact median {res['median_params_after']:,.0f}: "
        f"{res['median_teacher_to_compact']:,.0f}x smaller than the ensemble, {res['median_member_to_compact']:,.0f}x "
        f"than one member; pruning {res['median_param_ratio']:.1f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench compress-scale` (the module docstring says what it runs and reports); returns 0."""
    ap = argparse.ArgumentParser(prog="cortexloop bench compress-scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rig", default="rigs/sim.toml", help="rig whose sizes and settings compress uses")
    ap.add_argument("--neurons", type=int, default=16, help="neurons of the virtual cortex, all compressed")
    ap.add_argument("--presentations", type=int, default=500, help="presentations in the session (default 500)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")
    ap.add_argument("--neurons-per-task", type=int, default=2, help="neurons a Ray task (default 2)")
    ap.add_argument("--ensemble-steps", type=int, default=100, help="teacher steps (default 100)")
    ap.add_argument("--distill-steps", type=int, help="overrides compression.distill_steps")
    ap.add_argument("--retrain-steps", type=int, help="overrides compression.retrain_steps")
    ap.add_argument("--mei-steps", type=int, default=60, help="gradient steps of each page's MEI (default 60)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    if args.neurons < 1 or any(w < 1 for w in args.workers):
        ap.error("--neurons and --workers must be at least 1")
    res = run(args)
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0
