"""What the benchmarks that run sessions per arm and seed share: the key of a stored result, running the jobs here
or in worker processes, the progress line, and figures for the JSON."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
from multiprocessing import get_context
from pathlib import Path


def settings_key(args, keys: tuple[str, ...], **extra) -> str:
    """What a stored result depends on: the named command-line settings, the rig file's text (a changed file is a
    new run) and `extra`; a later run reuses the result only when all of it is the same."""
    rig_file = Path(args.rig) if args.rig else None
    rig_text = rig_file.read_text() if rig_file is not None and rig_file.is_file() else None
    text = json.dumps(
        {**{k: getattr(args, k) for k in keys}, **extra, "rig_text": rig_text}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_job_star(job) -> dict:
    run_job, *rest = job
    return run_job(*rest)


def _stop(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def run_jobs(run_job, args, jobs: list[tuple[str, int]], root: Path, results: dict, n_jobs: int) -> None:
    """run_job(args, arm, seed, root) for each (arm, seed) in jobs, into results[arm, seed], a progress line each;
    in args.workers processes where more than one. run_job must be a module-level function (it is sent to them)."""
    if args.workers <= 1:
        for arm, seed in jobs:
            results[arm, seed] = run_job(args, arm, seed, root)
            report_job(results[arm, seed], len(results), n_jobs)
        return
    # spawn: torch and the session's threads do not survive fork well. A stop (Ctrl-C, SIGTERM, an error in one
    # job) ends the workers too, instead of leaving them training on; finished jobs stay in the store.
    previous = signal.signal(signal.SIGTERM, _stop)
    pool = get_context("spawn").Pool(min(args.workers, len(jobs)))
    try:
        for res in pool.imap_unordered(_run_job_star, [(run_job, args, arm, seed, root) for arm, seed in jobs]):
            results[res["arm"], res["seed"]] = res
            report_job(res, len(results), n_jobs)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        signal.signal(signal.SIGTERM, previous)


def report_job(res: dict, n_done: int, n_jobs: int) -> None:
    print(
        f"[{n_done}/{n_jobs}] {res['arm']} seed {res['seed']}: final {res['accuracy'][-1]:.3f}, "
        f"{res['seconds']:.0f} s{' (stored result)' if res.get('reused') else ''}",
        file=sys.stderr,
        flush=True,
    )


def finite_or_none(x):
    """A figure for the JSON: "never" for +inf (never reached within the budget), None for nan (undefined)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if isinstance(x, float) and math.isinf(x):
        return "never"
    return x
