"""Presentation timing: frames shown, dropped frames, onset-to-flip error, frame-interval histogram.

    cortexloop bench presentation [--trials N] [--rig RIG] [--json FILE] [--histogram PNG]
    cortexloop bench presentation --in-process [--trials N] ...

Default: runs a simulated session (rig file, default rigs/sim.toml) with the
PsychoPy presenter, in real time, through `cortexloop run`'s processes: the
virtual cortex, the model worker training between and during trials, the
presenter and the controller; then reads the frame timing the presenter
recorded in the session store.

--in-process: runs trials through the PsychoPy presenter in this process, twice
in one run: with the CPU otherwise idle, and while a model-training process (a
small torch CNN, trained with Adam as the model worker does) competes for it.

Without a display, a 24-bit Xvfb is started for the run and stopped after.

Definitions (docs/presentation.md):
- frames shown: flips made during trials;
- dropped frames: refreshes missed between consecutive flips (intervals
  rounded to whole frames, minus one);
- onset-to-flip error: the onset time stamped inside win.callOnFlip minus the
  time win.flip() returned for that flip.

Under Xvfb there is no vsync and frames are paced in software: these numbers
show what the presenter code and the machine's load do to pacing, not the
timing of a real monitor. Check that on the rig with the photodiode.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _train_until_stopped(stop, threads: int, steps) -> None:
    """A model-worker stand-in: train a small CNN on random data until `stop` is set."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, padding=2),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 5, stride=2, padding=2),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 32 * 32, 20),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(32, 3, 64, 64)
    y = torch.randn(32, 20)
    while not stop.is_set():
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        with steps.get_lock():
            steps.value += 1


class TrainingLoad:
    def __init__(self, threads: int):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.steps = ctx.Value("l", 0)
        self.proc = ctx.Process(target=_train_until_stopped, args=(self.stop, threads, self.steps), daemon=True)

    def __enter__(self) -> "TrainingLoad":
        self.proc.start()
        deadline = time.monotonic() + 60
        while self.steps.value == 0 and time.monotonic() < deadline:  # wait until it really trains
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


class OwnXvfb:
    """Start a 24-bit Xvfb on a free display number if there is no $DISPLAY (pyglet hangs at 16-bit)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.old_display = os.environ.get("DISPLAY")

    def __enter__(self) -> "OwnXvfb":
        if self.old_display:
            return self
        if shutil.which("Xvfb") is None:
            raise RuntimeError("no $DISPLAY and no Xvfb: cannot open a PsychoPy window")
        n = next(k for k in range(90, 200) if not os.path.exists(f"/tmp/.X{k}-lock"))
        self.proc = subprocess.Popen(
            ["Xvfb", f":{n}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{n}") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.environ["DISPLAY"] = f":{n}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            if self.old_display is None:
                os.environ.pop("DISPLAY", None)


def run_trials(
    presenter, n_trials: int, images_per_trial: int, frames: tuple[int, int, int, int], size_px: int, seed: int
) -> dict:
    from stimulus.fixation import AlwaysFixating
    from stimulus.presenters.base import ShowPlan

    fixation_f, on_f, off_f, iti_f = frames
    rng = np.random.default_rng(seed)
    intervals, errors, dropped, shown = [], [], 0, 0
    t0 = time.perf_counter()
    for trial in range(n_trials):
        pixels = rng.integers(0, 256, (images_per_trial, size_px, size_px, 3), dtype=np.uint8)
        plan = ShowPlan(
            trial, pixels, [f"{seed}-{trial}-{i}" for i in range(images_per_trial)], fixation_f, on_f, off_f, iti_f
        )
        outcome = presenter.run_trial(plan, lambda i, t, f: None, AlwaysFixating())
        intervals.append(outcome.frame_intervals_s.astype(np.float64))
        errors += presenter.last_onset_to_flip_error_s
        dropped += outcome.dropped_frames
        shown += len(outcome.frame_intervals_s) + 1
        presenter.idle(2 * presenter.frame_s)  # an empty queue between trials, as the presenter process does
    result = timing_figures(n_trials, shown, dropped, np.concatenate(intervals), np.array(errors))
    result["wall_s"] = time.perf_counter() - t0
    return result


def timing_figures(trials: int, frames_shown: int, dropped: int, intervals_s: np.ndarray, errors_s: np.ndarray) -> dict:
    """The figures both modes report; "_intervals_ms" (not written to JSON) feeds the histogram."""
    intervals_ms = np.asarray(intervals_s, np.float64) * 1e3
    err_ms = np.asarray(errors_s, np.float64) * 1e3
    return {
        "trials": trials,
        "frames_shown": frames_shown,
        "dropped_frames": dropped,
        "dropped_share": dropped / max(1, frames_shown),
        "frame_interval_ms_median": float(np.median(intervals_ms)),
        "frame_interval_ms_p99": float(np.percentile(intervals_ms, 99)),
        "frame_interval_ms_max": float(intervals_ms.max()),
        "onset_to_flip_error_ms_median": float(np.median(err_ms)) if len(err_ms) else float("nan"),
        "onset_to_flip_error_ms_max": float(err_ms.max()) if len(err_ms) else float("nan"),
        "_intervals_ms": intervals_ms.tolist(),
    }


def print_timing_table(results: dict[str, dict], pacing: str | None) -> None:
    head = (
        f"{'condition':<16}{'trials':>7}{'frames':>8}{'dropped':>9}{'drop %':>8}{'median ms':>11}{'p99 ms':>9}"
        f"{'max ms':>9}{'onset err med/max ms':>22}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        print(
            f"{name:<16}{r['trials']:>7}{r['frames_shown']:>8}{r['dropped_frames']:>9}{100 * r['dropped_share']:>8.2f}"
            f"{r['frame_interval_ms_median']:>11.2f}{r['frame_interval_ms_p99']:>9.2f}{r['frame_interval_ms_max']:>9.2f}"
            f"{r['onset_to_flip_error_ms_median']:>12.4f}/{r['onset_to_flip_error_ms_max']:.4f}"
        )
    if pacing == "software":
        print(
            "No vsync on this display (e.g. Xvfb): frames were paced in software. "
            "Real timing must be checked on the rig with the photodiode."
        )


def histogram_path(args) -> Path:
    return args.histogram or (args.json.with_suffix(".png") if args.json else Path("presentation_intervals.png"))


def write_histogram(path: Path, results: dict[str, dict], frame_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(max(r["_intervals_ms"]) for r in results.values())
    bins = np.linspace(0, max(3 * frame_ms, top * 1.05), 120)
    for name, r in results.items():
        ax.hist(r["_intervals_ms"], bins=bins, histtype="step", label=f"{name} ({r['dropped_frames']} dropped)")
    for k in (1, 2, 3):
        ax.axvline(k * frame_ms, color="grey", lw=0.5, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("frame interval (ms)")
    ax.set_ylabel("frames")
    ax.set_title("PsychoPy presenter frame intervals (dashed: whole refreshes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_session_mode(args) -> int:
    """A whole simulated session with the PsychoPy presenter while the model worker trains."""
    from controller.config import load_rig, with_overrides
    from records.store import SessionStore
    from transport.launch import run_session

    rig = load_rig(args.rig)
    rig = with_overrides(rig, session={"n_trials": args.trials, "speed": "realtime"}, display={"presenter": "psychopy"})
    out_root = Path(tempfile.mkdtemp(prefix="cortexloop-bench-presentation-"))
    home = out_root / "home"
    home.mkdir()
    with OwnXvfb():
        summary = run_session(rig, out_root / "session", env={"HOME": str(home)})
    store = SessionStore.open(out_root / "session")
    try:
        timing = store.frame_timing()
    finally:
        store.close()
    hz = rig.display.refresh_hz
    result = timing_figures(
        summary["trials_done"] + summary["trials_aborted"],
        summary["frames_shown"],
        timing["dropped_frames"],
        timing["frame_intervals_s"],
        timing["onset_to_flip_error_s"],
    )
    presenter = summary.get("presenter", {})
    print(
        f"Simulated session ({args.rig}), PsychoPy presenter at {hz:g} Hz, pacing "
        f"{presenter.get('frame_pacing')}, model {rig.model.kind} training on {rig.model.device} meanwhile "
        f"(model version at end: {summary.get('model_version')})"
    )
    print_timing_table({"session": result}, presenter.get("frame_pacing"))
    print(f"plans ready on time: {(summary.get('plans_on_time_share') or 0):.1%}")
    histogram = histogram_path(args)
    write_histogram(histogram, {"session": result}, 1e3 / hz)
    print(f"frame-interval histogram: {histogram}")
    print(f"session: {summary['session_dir']}")
    if args.json:
        out = {
            "bench": "presentation",
            "mode": "session",
            "rig": str(args.rig),
            "refresh_hz": hz,
            "presenter": presenter,
            "histogram_png": str(histogram),
            "session_dir": summary["session_dir"],
            "session_summary": {
                k: summary.get(k)
                for k in (
                    "trials_done",
                    "trials_aborted",
                    "images_shown",
                    "plans_on_time_share",
                    "loop_latency_p50_ms",
                    "loop_latency_p99_ms",
                    "model_version",
                )
            },
            "result": {k: v for k, v in result.items() if not k.startswith("_")},
        }
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if summary.get("status") == "completed" else 1


def main(argv: list[str]) -> int:
    """`cortexloop bench presentation` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench presentation", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="presenter alone in this process, idle CPU vs a training load (no session)",
    )
    ap.add_argument(
        "--rig",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "rigs" / "sim.toml",
        help="rig file for the session (default rigs/sim.toml)",
    )
    ap.add_argument("--trials", type=int, default=20, help="trials per condition (default 20)")
    ap.add_argument("--images-per-trial", type=int, default=5)
    ap.add_argument("--refresh-hz", type=float, default=60.0)
    ap.add_argument("--on-ms", type=float, default=100.0)
    ap.add_argument("--off-ms", type=float, default=100.0)
    ap.add_argument("--size-px", type=int, default=112, help="image side in pixels (default 112)")
    ap.add_argument("--load-threads", type=int, default=1, help="torch threads of the training load (default 1)")
    ap.add_argument("--no-load", action="store_true", help="skip the condition with a training load")
    ap.add_argument("--json", type=Path, help="write results as JSON here")
    ap.add_argument(
        "--histogram",
        type=Path,
        help="frame-interval histogram PNG (default: next to --json, else presentation_intervals.png)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.in_process:
        return run_session_mode(args)

    from stimulus.config import DisplayConfig
    from stimulus.presenters.frames import frames_for

    hz = args.refresh_hz
    frames = (
        frames_for(0.3, hz),
        max(1, frames_for(args.on_ms / 1e3, hz)),
        frames_for(args.off_ms / 1e3, hz),
        frames_for(0.3, hz),
    )
    display = DisplayConfig(presenter="psychopy", resolution_px=(800, 600), refresh_hz=hz, frame_pacing="auto")
    results: dict[str, dict] = {}
    home = tempfile.mkdtemp(prefix="cortexloop-bench-home-")
    with OwnXvfb():
        old_home = os.environ.get("HOME")
        os.environ["HOME"] = home  # PsychoPy's prefs go here, not in the user's home
        try:
            from stimulus.presenters.psychopy_window import PsychoPyPresenter

            presenter = PsychoPyPresenter(display)
            presenter.open()
        finally:
            if old_home is not None:
                os.environ["HOME"] = old_home
        try:
            results["idle CPU"] = run_trials(
                presenter, args.trials, args.images_per_trial, frames, args.size_px, args.seed
            )
            if not args.no_load:
                with TrainingLoad(args.load_threads) as load:
                    steps0 = load.steps.value
                    results["model training"] = run_trials(
                        presenter, args.trials, args.images_per_trial, frames, args.size_px, args.seed + 1
                    )
                    results["model training"]["training_steps"] = load.steps.value - steps0
        finally:
            pacing, measured = presenter.pacing, presenter.measured_refresh_hz
            presenter.close()
    shutil.rmtree(home, ignore_errors=True)

    print(
        f"PsychoPy presenter, {hz:g} Hz, pacing {pacing} (flips measured at "
        f"{measured or float('nan'):.0f} Hz), {args.images_per_trial} images/trial, "
        f"on/off {frames[1]}/{frames[2]} frames, images {args.size_px} px"
    )
    print_timing_table(results, pacing)
    if "model training" in results:
        a, b = results["idle CPU"], results["model training"]
        print(
            f"p99 interval under training / idle: {b['frame_interval_ms_p99'] / a['frame_interval_ms_p99']:.2f}x; "
            f"training steps meanwhile: {b['training_steps']}"
        )

    histogram = histogram_path(args)
    write_histogram(histogram, results, 1e3 / hz)
    print(f"frame-interval histogram: {histogram}")
    if args.json:
        out = {
            "bench": "presentation",
            "mode": "in-process presenter",
            "refresh_hz": hz,
            "pacing": pacing,
            "measured_flip_hz": measured,
            "frames_per_trial": dict(zip(("fixation", "on", "off", "iti"), frames)),
            "histogram_png": str(histogram),
            "conditions": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in results.items()},
        }
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
