"""Checks of the online models on the virtual cortex, outside a session.

    python -m bench.online_models overfit [--steps 1500] [--every 250] [--set key=value ...]
        The rig's [model] trained on `--images` natural pool images, one presentation each (Poisson counts of the
        virtual cortex in the response window), for --steps steps: the median r with the truth on the held-out
        test images of the newest weights and of the published (best on held-out presentations) weights.
    python -m bench.online_models replay SESSION [--steps-per-trial 13] [--set key=value ...]
        A fresh model fed a recorded session's responses trial by trial (5 presentations, then
        --steps-per-trial steps), as the session's model worker would be: r after every 20 trials.

--set overrides [model] keys (e.g. --set learning_rate=0.003 --set kind=compact). Times are for one torch
thread on whatever else the machine runs. What the checks are for: docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from acquisition.population import Population
from controller.config import load_rig
from models.factory import make_online_model
from models.metrics import correlation
from stimulus.pools import make_pools

ROOT = Path(__file__).resolve().parent.parent


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _median_r(net, x: torch.Tensor, truth: np.ndarray) -> float:
    with torch.no_grad():
        return float(np.median(correlation(net(x).mean(0).numpy(), truth)))


def _published(model):
    return model.snapshot().rates


def main(argv=None) -> None:
    """`python -m bench.online_models overfit|replay ...` (the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["overfit", "replay"])
    ap.add_argument("session", nargs="?")
    ap.add_argument("--rig", default=str(ROOT / "rigs" / "sim.toml"))
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--steps-per-trial", type=int, default=13)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rig = load_rig(args.rig)
    cfg = rig.model.model_copy(update=_overrides(args.set))
    torch.set_num_threads(1)
    pools = make_pools(rig.images)
    pop = Population(rig.cortex.population, rig.images.size_px, rig.images.colour)
    x_test = torch.from_numpy(pools.test).permute(0, 3, 1, 2).float() / 255
    truth = pop.rates(pools.test)
    window_s = (rig.response.window_end_ms - rig.response.window_start_ms) / 1000
    newest = (lambda m: m.net) if cfg.kind == "shared" else (lambda m: m.snapshot().rates)
    print(
        f"model: {cfg.kind}, core {cfg.core} {cfg.core_channels} ch, {cfg.ensemble_size} members, "
        f"lr {cfg.learning_rate}"
    )
    if args.what == "overfit":
        rng = np.random.default_rng(args.seed)
        natural = np.flatnonzero(np.array(pools.train_kind) == "natural")
        images = pools.train[rng.choice(natural, args.images, replace=False)]
        counts = rng.poisson(pop.rates(images) * window_s).astype(np.float32)
        model = make_online_model(cfg, counts.shape[1], images.shape[1:])
        model.add_responses(images, counts, window_s)
        t = 0.0
        for _ in range(0, args.steps, args.every):
            t0 = time.perf_counter()
            model.train(args.every)
            t += time.perf_counter() - t0
            print(
                f"steps {model.steps_done:5d}  median r: newest {_median_r(newest(model), x_test, truth):.3f}, "
                f"published {_median_r(_published(model), x_test, truth):.3f}  ({model.steps_done / t:.1f} steps/s)",
                flush=True,
            )
        return
    from records.store import SessionStore

    store = SessionStore.open(Path(args.session))
    resp = store.responses(valid_only=True)
    store.close()
    pixels, counts = resp["pixels"], resp["counts"]
    model = make_online_model(cfg, counts.shape[1], pixels.shape[1:])
    for trial, i in enumerate(range(0, len(pixels), 5), 1):
        model.add_responses(pixels[i : i + 5], counts[i : i + 5], resp["window_s"])
        model.train(args.steps_per_trial)
        if trial % 20 == 0:
            print(
                f"trial {trial:4d}  steps {model.steps_done:5d}  median r: newest "
                f"{_median_r(newest(model), x_test, truth):.3f}, published "
                f"{_median_r(_published(model), x_test, truth):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
