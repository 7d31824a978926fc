"""`cortexloop compress SESSION`: from a recorded session to one small, pruned CNN per neuron.

1. Train the ensemble (the teacher) on the session's responses, as the model worker does.
2. Distill the ensemble mean into one compact model per neuron, on the pool images,
   the session's images and augmented copies of both (models/distill.py).
3. Prune each model filter by filter (models/prune.py), then retrain it on the teacher.
4. Report per neuron: parameters and filters per layer before/after, r^2 with the
   teacher, correlation with the ground truth (virtual cortex only) on the held-out
   test images; write the models (models/save.py) and one PNG per neuron (MEI,
   best pool images, filters kept per layer).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from controller.config import RigConfig, load_rig, parse_rig
from models.compact import CompactSpec, count_parameters
from models.distill import augmented_images, distill, ensemble_mean, fit_students, teacher_rates, to_tensor
from models.metrics import correlation, r2
from models.online import CompactOnline, prepare_torch_for, resolve_device
from models.prune import prune_model
from models.save import export_models, save_model
from stimulus.pools import make_pools


def compress_from_arrays(images: np.ndarray, counts: np.ndarray, window_s: float, rig: RigConfig,
                         out_dir: str | Path, ensemble_steps: int = 1000, n_augment: int = 1,
                         mei_steps: int = 100, log=print) -> dict:
    """images uint8 (n, H, W, C), counts (n, N) in the response window. Returns the report (also report.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mcfg = rig.model.model_copy(update={"kind": "compact"})
    device = resolve_device(mcfg.device)
    prepare_torch_for(device, mcfg.cpu_threads)
    n_neurons = counts.shape[1]
    t0 = time.perf_counter()

    log(f"training the ensemble teacher: {mcfg.ensemble_size} members x {n_neurons} neurons, "
        f"{len(images)} presentations, {ensemble_steps} steps")
    online = CompactOnline(mcfg, n_neurons, images.shape[1:])
    online.add_responses(images, counts, window_s)
    online.train(ensemble_steps)
    teacher = online.snapshot()
    teach = ensemble_mean(teacher)

    pools = make_pools(rig.images)
    distill_images = augmented_images(np.concatenate([pools.train, images]), n_augment, seed=mcfg.seed)
    targets = teacher_rates(teach, distill_images, device)
    spec = CompactSpec.from_config(mcfg, images.shape[1:])
    log(f"distilling into {n_neurons} students on {len(distill_images)} images, {mcfg.distill_steps} steps")
    students = distill(distill_images, targets, spec, mcfg.distill_steps, mcfg.distill_learning_rate,
                       mcfg.batch_size * 2, device, seed=mcfg.seed, form=online.form)

    # Pruning decisions use pool images (not the test set), scored against the teacher.
    rng = np.random.default_rng(mcfg.seed)
    prune_idx = rng.choice(len(distill_images), min(1000, len(distill_images)), replace=False)
    x_prune = to_tensor(distill_images[prune_idx]).to(device)
    pruned = []
    for n, student in enumerate(students):
        pruned.append(prune_model(student, x_prune, targets[prune_idx, n].to(device), mcfg.prune_keep_r2_frac,
                                  mcfg.prune_keep_variance_frac, mcfg.prune_min_filters))
    log(f"retraining {n_neurons} pruned models, {mcfg.retrain_steps} steps")
    final = fit_students([p.model for p in pruned], distill_images, targets, mcfg.retrain_steps,
                         mcfg.distill_learning_rate / 2, mcfg.batch_size * 2, device, seed=mcfg.seed + 1)

    # Held-out test images: never shown, never distilled on.
    x_test = to_tensor(pools.test).to(device)
    with torch.no_grad():
        t_test = teach(x_test).cpu()
        s_test = torch.stack([s(x_test) for s in students], 1).cpu()
        f_test = torch.stack([f(x_test) for f in final], 1).cpu()
    truth = None
    if rig.cortex.source == "virtual":
        from acquisition.population import Population

        pop = Population(rig.cortex.population, rig.images.size_px, rig.images.colour)
        truth = pop.rates(pools.test)[:, :n_neurons]

    ensemble_params = count_parameters(online.net) // n_neurons
    rows = []
    for n in range(n_neurons):
        row = {"neuron": n, "params_ensemble_per_neuron": ensemble_params,
               "params_before": pruned[n].params_before, "params_after": count_parameters(final[n]),
               "filters_before": pruned[n].filters_before, "filters_after": list(final[n].spec.filters),
               "r2_teacher_distilled": float(r2(s_test[:, n], t_test[:, n])[0]),
               "r2_teacher_pruned_retrained": float(r2(f_test[:, n], t_test[:, n])[0])}
        if truth is not None:
            row["corr_truth_teacher"] = float(correlation(t_test[:, n], truth[:, n])[0])
            row["corr_truth_compact"] = float(correlation(f_test[:, n], truth[:, n])[0])
        rows.append(row)

    for n, model in enumerate(final):
        save_model(model, out_dir / f"neuron_{n:03d}.pt",
                   meta={"neuron": n, "units": "spikes/s", "input": "(B, C, H, W) float in [0, 1]",
                         "window_s": float(window_s), **{k: v for k, v in rows[n].items() if k != "neuron"}})
    export_models(final, out_dir / "models.pt2", meta={"neurons": list(range(n_neurons))})
    _write_figures(final, pools.train, out_dir, mei_steps, device, mcfg.seed)
    report = {"neurons": rows, "n_presentations": int(len(images)), "window_s": float(window_s),
              "seconds": time.perf_counter() - t0, "form": online.form, "device": str(device)}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    log(format_table(rows))
    return report


def format_table(rows: list[dict]) -> str:
    has_truth = "corr_truth_compact" in rows[0]
    head = f"{'neuron':>6} {'params':>15} {'filters per layer':>28} {'r2 teacher':>16}"
    head += f" {'r truth (ens/compact)':>22}" if has_truth else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        filt = f"{'/'.join(map(str, r['filters_before']))} -> {'/'.join(map(str, r['filters_after']))}"
        line = (f"{r['neuron']:>6} {r['params_before']:>7}->{r['params_after']:<7} {filt:>28} "
                f"{r['r2_teacher_distilled']:>7.2f}->{r['r2_teacher_pruned_retrained']:<7.2f}")
        if has_truth:
            line += f" {r['corr_truth_teacher']:>10.2f}/{r['corr_truth_compact']:<10.2f}"
        lines.append(line)
    med = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    lines.append(f"median parameters {med('params_before'):.0f} -> {med('params_after'):.0f} "
                 f"(ensemble {rows[0]['params_ensemble_per_neuron']} per neuron); "
                 f"median r2 with teacher {med('r2_teacher_pruned_retrained'):.2f}"
                 + (f"; median r with truth {med('corr_truth_compact'):.2f}" if has_truth else ""))
    return "\n".join(lines)


class _StackedPredictor:
    """Pruned models (of different sizes) as a one-member Predictor, for synthesis."""

    def __init__(self, models):
        self.models, self.version, self.n_members, self.n_neurons = models, 0, 1, len(models)

    def rates(self, images: torch.Tensor, neurons=None) -> torch.Tensor:
        sel = range(self.n_neurons) if neurons is None else neurons
        return torch.stack([self.models[n](images) for n in sel], 1)[None]


def _write_figures(models, pool: np.ndarray, out_dir: Path, mei_steps: int, device: torch.device, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stimulus.synthesis import most_exciting_images

    for m in models:
        for p in m.parameters():
            p.requires_grad_(False)
    predictor = _StackedPredictor(models)
    meis = most_exciting_images(predictor, list(range(len(models))), pool.shape[1:], steps=mei_steps, seed=seed)
    with torch.no_grad():
        x = to_tensor(pool)
        pool_rates = torch.cat([predictor.rates(x[i:i + 512].to(device))[0].cpu() for i in range(0, len(x), 512)])
    for n, m in enumerate(models):
        top = torch.argsort(pool_rates[:, n], descending=True)[:4].tolist()
        fig, axes = plt.subplots(1, 6, figsize=(13, 2.4))
        with torch.no_grad():
            mei_rate = float(m(to_tensor(meis[n:n + 1]).to(device))[0])
        _show(axes[0], meis[n], f"MEI {mei_rate:.0f} sp/s")
        for ax, i in zip(axes[1:5], top):
            _show(ax, pool[i], f"pool #{i} {pool_rates[i, n]:.0f} sp/s")
        f = list(m.spec.filters)
        axes[5].bar(range(len(f)), f, color="0.3")
        axes[5].set_xticks(range(len(f)))
        axes[5].set_title(f"filters kept ({count_parameters(m)} params)", fontsize=8)
        axes[5].set_xlabel("layer", fontsize=8)
        fig.suptitle(f"neuron {n}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / f"neuron_{n:03d}.png", dpi=80)
        plt.close(fig)


def _show(ax, img: np.ndarray, title: str) -> None:
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def read_session(session_dir: str | Path) -> tuple[np.ndarray, np.ndarray, float, RigConfig]:
    """(images uint8, counts, window_s, rig) of the valid responses of a stored session."""
    from controller.store import SessionStore

    store = SessionStore.open(Path(session_dir))
    try:
        rig = parse_rig(json.loads(store.rig_json()), f"{session_dir} (stored rig)")
        resp = store.responses(valid_only=True)
    finally:
        store.close()
    if len(resp["counts"]) == 0:
        raise SystemExit(f"{session_dir}: no valid responses stored; nothing to compress")
    return resp["pixels"], resp["counts"], resp["window_s"], rig


def compress_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="cortexloop compress",
                                 description="distill and prune one compact CNN per neuron from a stored session")
    ap.add_argument("session", help="session directory (holds session.sqlite)")
    ap.add_argument("--out", help="output directory (default SESSION/compact)")
    ap.add_argument("--rig", help="rig file whose [model] section replaces the stored one (e.g. rigs/gpu.toml)")
    ap.add_argument("--ensemble-steps", type=int, default=1000, help="teacher training steps")
    ap.add_argument("--distill-steps", type=int, help="overrides model.distill_steps")
    ap.add_argument("--retrain-steps", type=int, help="overrides model.retrain_steps")
    ap.add_argument("--mei-steps", type=int, default=100)
    args = ap.parse_args(argv)
    images, counts, window_s, rig = read_session(args.session)
    model = rig.model if args.rig is None else load_rig(args.rig).model
    updates = {k: v for k, v in {"distill_steps": args.distill_steps, "retrain_steps": args.retrain_steps}.items()
               if v is not None}
    rig = rig.model_copy(update={"model": model.model_copy(update=updates)})
    out = Path(args.out) if args.out else Path(args.session) / "compact"
    compress_from_arrays(images, counts, window_s, rig, out, ensemble_steps=args.ensemble_steps,
                         mei_steps=args.mei_steps)
    print(f"models, figures and report.json written to {out}")
    return 0
