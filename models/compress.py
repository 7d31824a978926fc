"""`cortexloop compress SESSION`: from a recorded session to one small, pruned CNN per neuron.

Stages (each with a progress bar, all neurons at once):

1. teacher   train the ensemble on the session's responses, as the model worker does,
             starting from the model worker's checkpoint of the session where there is one.
2. distil    one student per neuron (of all recorded neurons, or those chosen), all students
             together as one stacked network or a loop (compression.distill_form), on the pool
             images, the session's images and augmented copies of both (models/distill.py).
3. prune     the authors' rule, layer by layer from the last (models/prune.py); the
             statistics come from one pass of the stacked students.
4. retrain   the pruned students, in the same form, on the teacher again.
5. evaluate  on the held-out natural test set (never shown, never distilled on): r^2 with
             the teacher and, for a virtual cortex, r with the true rates, before and
             after pruning.
6. pages     one PNG per neuron: MEI (bounded by the range of rates the model was trained
             on), best pool images, kept filters drawn, figures before and after.

Writes `neuron_NNN.pt`, `models.pt2` (models/save.py), `neuron_NNN.png` and `report.json` (the table as
data, with the compression goals and whether they were met). The stages and the report: docs/compress.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from controller.config import RigConfig, load_rig, parse_rig
from models.compact import count_parameters, student_spec
from models.distill import (
    augmented_images,
    distill,
    ensemble_mean,
    fit_students,
    student_form,
    teacher_rates,
    to_tensor,
)
from models.factory import make_online_model
from models.metrics import correlation, r2
from models.online import prepare_torch_for, resolve_device
from models.prune import prune_models
from models.save import export_models
from stimulus.pools import make_pools

# The paper's claims, checked on every run (report.json "goals").
GOAL_PARAM_RATIO = 10.0  # median parameters before / after pruning
GOAL_TEACHER_KEPT = 0.9  # median held-out r^2 with the teacher, pruned / unpruned
GOAL_TRUTH_GAP = 0.05  # median r with the truth: teacher minus compact, at most


class Stages:
    """A progress bar per stage (rich), and the seconds each stage took."""

    def __init__(self, enabled: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> "Stages":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    @contextmanager
    def stage(self, name: str, description: str, total: int):
        task = self.bar.add_task(description, total=max(total, 1))
        t0 = time.perf_counter()
        yield lambda done: self.bar.update(task, completed=done)
        self.bar.update(task, completed=max(total, 1))
        self.seconds[name] = round(time.perf_counter() - t0, 2)


ROWS_DIR = "rows"  # SESSION/compact/rows/neuron_NNN.json: a neuron's report row, written last (the neuron is done)
TEACHER_RATES = "teacher_rates.pt"  # the teacher's rates and the settings they belong to, for a resumed run


@dataclass
class NeuronJob:
    """What the work on any set of neurons reads besides the arrays: small, sent with every task.

    model: the [model] section the teacher was built with; compression: the [compression] section;
    spec: the students' architecture; teacher: the teacher's parameter counts (params_teacher_ensemble,
    params_teacher_member, params_ensemble_per_neuron); rig: the whole rig (its [cortex] gives the truth of a
    virtual cortex on the pages)."""

    rig: RigConfig
    model: object
    compression: object
    spec: object
    window_s: float
    mei_steps: int
    teacher: dict
    n_pool: int  # distill_images[:n_pool] are the pool's training images (the pages' candidates)


def compress_from_arrays(
    images: np.ndarray,
    counts: np.ndarray,
    window_s: float,
    rig: RigConfig,
    out_dir: str | Path,
    ensemble_steps: int = 100,
    mei_steps: int = 60,
    log=print,
    progress: bool = False,
    teacher_checkpoint: str | Path | None = None,
    neurons: list[int] | None = None,
    runner=None,
    restart: bool = False,
) -> dict:
    """images uint8 (n, H, W, C), counts (n, N) in the response window. Returns the report (also report.json).

    teacher_checkpoint: the model worker's checkpoint (SESSION/checkpoints/model.pt); the teacher
    then starts from the session's weights and trains `ensemble_steps` more.
    neurons: the recorded neurons (column indices of counts) to compress, default all. The teacher
    always learns every neuron (a shared core learns from all of them); only these get students.
    runner: None runs every neuron here, all students together; otherwise a callable
    runner(job, arrays, neurons, deliver, fail, log, show) -> dict that runs `compress_neurons` and the
    pages elsewhere (models/compress_cluster.py), hands each neuron's result to
    deliver(row, record, png bytes) and each failure to fail(neuron, error text), and calls
    show(done, running, failed) (neuron counts) for the progress bar.
    Resume: a neuron whose row is in out_dir/rows/ from the same session and settings is not compressed
    again; out_dir of other settings is refused unless `restart` (which discards what it holds).
    A neuron's results do not depend on which others are compressed with it (its student is seeded by its
    own number), up to float rounding.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The teacher is the kind of ensemble the session trained (shared core or compact); a ridge baseline is
    # not a teacher worth copying, so its sessions get the shared-core ensemble, trained here from scratch.
    mcfg = rig.model.model_copy(update={"kind": "shared" if rig.model.kind == "baseline" else rig.model.kind})
    ccfg = rig.compression
    device = resolve_device(mcfg.device)
    prepare_torch_for(device, mcfg.cpu_threads)
    n_recorded = counts.shape[1]
    chosen = check_neurons(neurons, n_recorded)
    print_ = fingerprint(images, counts, window_s, rig, ensemble_steps, mei_steps, teacher_checkpoint)
    cached = _prior_results(out_dir, print_, restart)
    done_before = {n for n in chosen if (out_dir / ROWS_DIR / f"neuron_{n:03d}.json").exists()} if cached else set()
    todo = [n for n in chosen if n not in done_before]
    if done_before:
        log(f"{out_dir}: {len(done_before)} neuron(s) already done with these settings; compressing {len(todo)}")
    t0 = time.perf_counter()
    failed: list[dict] = []
    info: dict = {}
    with Stages(progress) as stages:
        pools = make_pools(rig.images)
        distill_images = augmented_images(
            np.concatenate([pools.train, images]), ccfg.distill_augmented_copies, seed=mcfg.seed
        )
        if cached is not None:
            teacher = cached
            with stages.stage("teacher", "teacher: the rates of the run before", 1):
                pass
            with stages.stage("teacher_rates", "teacher rates: the run before's", 1):
                pass
        else:
            # 1. The teacher: the ensemble, trained on the recorded responses; from the session's own
            # weights where the model worker left a checkpoint that fits, so those steps are not redone.
            online, teacher_from = _teacher(mcfg, n_recorded, images.shape[1:], teacher_checkpoint, log)
            online.add_responses(images, counts, window_s)
            with stages.stage("teacher", f"teacher: {mcfg.ensemble_size}x{n_recorded} models", ensemble_steps) as done:
                chunk = 10
                for s in range(0, ensemble_steps, chunk):
                    online.train(min(chunk, ensemble_steps - s))
                    done(min(s + chunk, ensemble_steps))
            teach = ensemble_mean(online.snapshot())
            save_teacher(online, n_recorded, images.shape[1:], out_dir / "teacher.pt")
            with stages.stage("teacher_rates", f"teacher rates: {len(distill_images)} images", 1):
                ensemble = count_parameters(online.net)
                teacher = {
                    "fingerprint": print_,
                    "distill_rates": teacher_rates(teach, distill_images, device),
                    "test_rates": teacher_rates(teach, pools.test, device),
                    "teacher_from": teacher_from,
                    "ensemble_form": online.form,
                    "params_teacher_ensemble": ensemble,
                    "params_teacher_member": ensemble // max(1, online.n_members),
                    "params_ensemble_per_neuron": ensemble // n_recorded,
                }
            torch.save(teacher, out_dir / TEACHER_RATES)
            del online, teach

        truth = None
        if rig.cortex.source == "virtual":
            truth = population_of(rig).rates(pools.test)
        spec = student_spec(mcfg, ccfg, images.shape[1:])
        job = NeuronJob(
            rig=rig,
            model=mcfg,
            compression=ccfg,
            spec=spec,
            window_s=float(window_s),
            mei_steps=mei_steps,
            teacher={k: teacher[k] for k in ("params_teacher_ensemble", "params_teacher_member")}
            | {"params_ensemble_per_neuron": teacher["params_ensemble_per_neuron"]},
            n_pool=len(pools.train),
        )
        arrays = {
            "distill_images": distill_images,
            "distill_rates": teacher["distill_rates"].numpy(),
            "test_images": pools.test,
            "test_rates": teacher["test_rates"].numpy(),
            "truth": truth,
        }

        def deliver(row: dict, record: dict, png: bytes | None) -> None:
            n = row["neuron"]
            torch.save(record, out_dir / f"neuron_{n:03d}.pt")
            if png is not None:
                (out_dir / f"neuron_{n:03d}.png").write_bytes(png)
            _write_row(out_dir, row)

        def fail(neuron: int, error: str) -> None:
            failed.append({"neuron": int(neuron), "error": error})

        if todo and runner is None:
            rows_new, final, info = compress_neurons(job, arrays, todo, device, stages)
            for row, model in zip(rows_new, final):
                torch.save(neuron_record(model, row, window_s), out_dir / f"neuron_{row['neuron']:03d}.pt")
            # 6. One page per neuron.
            with stages.stage("pages", f"pages: MEIs and figures ({mei_steps} steps)", len(todo)) as done:
                population = population_of(rig) if rig.cortex.source == "virtual" else None
                pages = write_pages(
                    final, rows_new, pools.train, out_dir, mei_steps, device, mcfg.seed, population, progress=done
                )
            for row, page in zip(rows_new, pages):
                row.update(page)
                _write_row(out_dir, row)
        elif todo:
            task = stages.bar.add_task("neurons", total=len(todo))

            def show(done: int, running: int, failed: int) -> None:
                description = f"neurons: {done} done, {running} running, {failed} failed"
                stages.bar.update(task, completed=done + failed, description=description)

            info = runner(job, arrays, todo, deliver, fail, log, show)

        rows = [
            json.loads(p.read_text()) for n in chosen if (p := out_dir / ROWS_DIR / f"neuron_{n:03d}.json").exists()
        ]
        if rows:
            from models.save import load_model

            export_models(
                [load_model(out_dir / f"neuron_{r['neuron']:03d}.pt")[0] for r in rows],
                out_dir / "models.pt2",
                meta={"neurons": [r["neuron"] for r in rows]},
            )

    report = {
        "neurons": rows,
        "failed": failed,
        "resumed": sorted(done_before),
        "n_presentations": int(len(images)),
        "window_s": float(window_s),
        "n_test_images": int(len(pools.test)),
        "n_distill_images": int(len(distill_images)),
        "student_spec": spec.to_dict(),
        "smooth_sigma": ccfg.smooth_sigma,
        "steps": {
            "ensemble": ensemble_steps,
            "distill": ccfg.distill_steps,
            "retrain": ccfg.retrain_steps,
            "mei": mei_steps,
        },
        "distill": {
            "form": info.get("form", ccfg.distill_form),
            "form_setting": ccfg.distill_form,
            "schedule": ccfg.distill_schedule,
            "learning_rate": ccfg.distill_learning_rate,
            "batch_size": ccfg.distill_batch_size,
        },
        "teacher": {
            "params_ensemble": teacher["params_teacher_ensemble"],
            "params_member": teacher["params_teacher_member"],
            "members": mcfg.ensemble_size,
        },
        "goals": goals(rows) if rows else {},
        "seconds": round(time.perf_counter() - t0, 1),
        "stage_seconds": stages.seconds | info.get("stage_seconds", {}),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "ensemble_form": teacher["ensemble_form"],
        "teacher_from": teacher["teacher_from"] if cached is None else f"{teacher['teacher_from']} (run before)",
    }
    if "cluster" in info:
        report["cluster"] = info["cluster"]
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    for f in failed:
        log(f"neuron {f['neuron']} FAILED: {f['error']}")
    if rows:
        log(format_table(rows, report))
    return report


def compress_neurons(
    job: NeuronJob, arrays: dict, neurons: list[int], device: torch.device, stages: Stages | None = None
) -> tuple[list[dict], list, dict]:
    """Distil, prune, retrain and evaluate the students of `neurons` (recorded indices), all together.

    arrays: "distill_images" uint8 (P, H, W, C), "distill_rates" float (P, N recorded) the teacher's rates
    on them (spikes/s), "test_images" uint8 (T, H, W, C), "test_rates" (T, N), "truth" (T, N) or None (a
    virtual cortex's true rates). Returns (rows without the page's figures, the final models in eval mode on
    the CPU, {"form": the student form used, "stage_seconds": {...}}).
    """
    mcfg, ccfg, spec = job.model, job.compression, job.spec
    stages = stages or Stages(False)
    distill_images = arrays["distill_images"]
    targets = torch.from_numpy(np.array(arrays["distill_rates"][:, neurons], dtype=np.float32))
    t_test = torch.from_numpy(np.array(arrays["test_rates"][:, neurons], dtype=np.float32))
    truth = None if arrays["truth"] is None else np.asarray(arrays["truth"])[:, neurons]
    n_neurons = len(neurons)
    before = dict(stages.seconds)
    # 2. Distil: all students together, in the form chosen once here (timed where "auto") for both
    # distillation and retraining.
    form = student_form(ccfg.distill_form, device, spec, n_neurons, min(ccfg.distill_batch_size, len(distill_images)))
    steps = ccfg.distill_steps
    with stages.stage("distil", f"distil: {n_neurons} students", steps) as done:
        students = distill(
            distill_images,
            targets,
            spec,
            steps,
            ccfg.distill_learning_rate,
            ccfg.distill_batch_size,
            device,
            seed=mcfg.seed,
            smooth_sigma=ccfg.smooth_sigma,
            smooth_every=ccfg.smooth_every_steps,
            form=form,
            schedule=ccfg.distill_schedule,
            progress=done,
            ids=neurons,
        )

    # 3. Prune. Decisions use distillation images (never the test set), against the teacher.
    rng = np.random.default_rng(mcfg.seed)
    prune_idx = rng.choice(len(distill_images), min(ccfg.prune_images, len(distill_images)), replace=False)
    x_prune = to_tensor(distill_images[prune_idx]).to(device)
    with stages.stage("prune", f"prune: {n_neurons} students", n_neurons) as done:
        pruned = prune_models(
            students,
            x_prune,
            targets[prune_idx].to(device),
            ccfg.prune_keep_r2_frac,
            ccfg.prune_keep_variance_frac,
            ccfg.prune_min_filters,
            progress=lambda k: done(k + 1),
        )
    del x_prune

    # 4. Retrain the pruned students on the teacher.
    steps = ccfg.retrain_steps
    with stages.stage("retrain", f"retrain: {n_neurons} pruned students", steps) as done:
        final = fit_students(
            [p.model for p in pruned],
            distill_images,
            targets,
            steps,
            ccfg.distill_learning_rate / 2,
            ccfg.distill_batch_size,
            device,
            seed=mcfg.seed + 1,
            smooth_sigma=ccfg.smooth_sigma,
            smooth_every=ccfg.smooth_every_steps,
            form=form,
            schedule=ccfg.distill_schedule,
            progress=done,
        )

    # 5. Held-out test images: never shown, never distilled on.
    test_images = arrays["test_images"]
    with stages.stage("evaluate", "held-out test set", 1):
        s_test = _rates(students, test_images, device)
        p_test = _rates([p.model for p in pruned], test_images, device)
        f_test = _rates(final, test_images, device)

    teacher = job.teacher
    rows = []
    for n in range(n_neurons):
        after = count_parameters(final[n])
        row = {
            "neuron": neurons[n],
            "params_ensemble_per_neuron": teacher["params_ensemble_per_neuron"],
            "params_before": pruned[n].params_before,
            "params_after": after,
            # The paper's headline: the compact model against the whole teacher and against one of its members.
            "params_teacher_ensemble": teacher["params_teacher_ensemble"],
            "params_teacher_member": teacher["params_teacher_member"],
            "teacher_to_compact": round(teacher["params_teacher_ensemble"] / after, 1),
            "member_to_compact": round(teacher["params_teacher_member"] / after, 1),
            "filters_before": pruned[n].filters_before,
            "filters_after": list(final[n].spec.filters),
            "filters_kept": pruned[n].kept,
            "variance_explained_kept": [round(v, 4) for v in pruned[n].explained],
            "r2_teacher_prune_images_before": pruned[n].r2_before,
            "r2_teacher_prune_images_pruned": pruned[n].r2_after,
            # Held-out natural test set from here on.
            "r2_teacher_unpruned": float(r2(s_test[:, n], t_test[:, n])[0]),
            "r2_teacher_pruned_not_retrained": float(r2(p_test[:, n], t_test[:, n])[0]),
            "r2_teacher_pruned": float(r2(f_test[:, n], t_test[:, n])[0]),
            "trained_rate_range_hz": [float(targets[:, n].min()), float(targets[:, n].max())],
        }
        if truth is not None:
            row["r_truth_teacher"] = float(correlation(t_test[:, n], truth[:, n])[0])
            row["r_truth_unpruned"] = float(correlation(s_test[:, n], truth[:, n])[0])
            row["r_truth_pruned"] = float(correlation(f_test[:, n], truth[:, n])[0])
        rows.append(row)
    final = [m.to("cpu").eval() for m in final]
    seconds = {k: v for k, v in stages.seconds.items() if k not in before or v != before[k]}
    return rows, final, {"form": form, "stage_seconds": seconds}


def neuron_record(model, row: dict, window_s: float) -> dict:
    """The plain dict neuron_NNN.pt holds (models/save.py, model_record) with the row as its metadata."""
    from models.save import model_record

    return model_record(
        model,
        meta={
            "neuron": row["neuron"],
            "units": "spikes/s",
            "input": "(B, C, H, W) float in [0, 1]",
            "window_s": float(window_s),
            **{k: v for k, v in row.items() if k not in ("neuron", "filters_kept")},
        },
    )


def population_of(rig: RigConfig):
    """The virtual cortex's population of `rig` (its true rates), for a rig whose cortex is virtual."""
    from acquisition.population import Population

    return Population(rig.cortex.population, rig.images.size_px, rig.images.colour)


def fingerprint(
    images: np.ndarray,
    counts: np.ndarray,
    window_s: float,
    rig: RigConfig,
    ensemble_steps: int,
    mei_steps: int,
    teacher_checkpoint: str | Path | None,
) -> str:
    """A hash of everything a neuron's results depend on: the session's images and counts, the rig's model,
    compression, images and cortex sections, the steps and the teacher's starting checkpoint."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(images), np.ascontiguousarray(counts, dtype=np.float32)):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    sections = {k: getattr(rig, k).model_dump(mode="json") for k in ("model", "compression", "images", "cortex")}
    h.update(json.dumps([float(window_s), ensemble_steps, mei_steps, sections], sort_keys=True).encode())
    if teacher_checkpoint is not None and Path(teacher_checkpoint).exists():
        h.update(Path(teacher_checkpoint).read_bytes())
    return h.hexdigest()


def _prior_results(out_dir: Path, print_: str, restart: bool) -> dict | None:
    """The teacher's rates of an earlier run into out_dir with the same fingerprint, else None; an out_dir
    holding neurons done with other settings is refused (SystemExit) unless `restart`, which discards them."""
    path = out_dir / TEACHER_RATES
    rows = sorted((out_dir / ROWS_DIR).glob("neuron_*.json"))
    if restart:
        for p in rows:
            p.unlink()
        path.unlink(missing_ok=True)
        return None
    if not path.exists():
        return None
    cached = torch.load(path, map_location="cpu", weights_only=True)
    if cached.get("fingerprint") == print_:
        return cached
    if rows:
        raise SystemExit(
            f"{out_dir} holds {len(rows)} neuron(s) compressed from another session or with other settings; "
            "give another --out, or --restart to discard them"
        )
    return None


def _write_row(out_dir: Path, row: dict) -> None:
    """The neuron's row, written last and whole (a partly written row is never read as done)."""
    rows = out_dir / ROWS_DIR
    rows.mkdir(exist_ok=True)
    tmp = rows / f".neuron_{row['neuron']:03d}.json.tmp"
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(rows / f"neuron_{row['neuron']:03d}.json")


def save_teacher(online, n_neurons: int, image_shape, path: Path) -> None:
    """The teacher as trained here (`teacher.pt`, torch.load(weights_only=True) reads it): the model worker's
    checkpoint format plus the [model] section and the image shape (H, W, C), so `load_teacher` rebuilds it
    without the session (cortexloop interrogate runs its experiments on it)."""
    state = {
        "kind": online.cfg.kind,
        "n_neurons": n_neurons,
        "image_shape": [int(v) for v in image_shape],
        "model_config": json.dumps(online.cfg.model_dump(mode="json")),
        "model": online.weights_state(),
    }
    torch.save(state, path)


def load_teacher(path: str | Path, device: str | torch.device = "cpu"):
    """The Predictor saved by `save_teacher`: `.rates(x (B, C, H, W) in [0, 1])` -> (members, B, N) spikes/s.
    FileNotFoundError where compress ran before teachers were saved."""
    from models.config import ModelConfig

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg = ModelConfig.model_validate(json.loads(state["model_config"])).model_copy(update={"device": str(device)})
    online = make_online_model(cfg, int(state["n_neurons"]), tuple(state["image_shape"]))
    online.load_weights_state(state["model"])
    return online.snapshot()


def check_neurons(neurons: list[int] | None, n_recorded: int) -> list[int]:
    """The neurons to compress (all by default), refused with the reason if any is not a recorded one."""
    if neurons is None:
        return list(range(n_recorded))
    chosen = [int(n) for n in neurons]
    if not chosen:
        raise ValueError("no neurons chosen to compress")
    outside = [n for n in chosen if not 0 <= n < n_recorded]
    if outside:
        raise ValueError(f"neurons {outside} were not recorded: the session has neurons 0-{n_recorded - 1}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"neurons {chosen} name a neuron twice")
    return chosen


def parse_neurons(text: str) -> list[int]:
    """'0,3,7' or '0-4' or '0-2,9' -> neuron indices in the order given."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--neurons {text!r}: {part!r} is not a neuron index or a range like 0-4") from None
    return out


def _teacher(mcfg, n_neurons: int, image_shape, checkpoint: str | Path | None, log) -> tuple[object, str]:
    """The ensemble to train as the teacher, and where its weights came from. A session checkpoint of an online
    model of the compact or the shared kind is read back as that kind (models.factory builds it)."""
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        weights = state.get("model", {})
        kind = state.get("kind")
        if kind in ("compact", "shared") and state.get("n_neurons") == n_neurons:
            update = {"kind": kind, **({"form": weights["form"]} if "form" in weights else {})}
            try:
                online = make_online_model(mcfg.model_copy(update=update), n_neurons, image_shape)
                online.load_weights_state(weights)
                return online, f"session checkpoint ({kind} model version {online.version}, {online.steps_done} steps)"
            except (RuntimeError, KeyError, ValueError) as err:  # another architecture: e.g. --rig changed it
                log(
                    f"the session's checkpoint does not fit this model ({str(err).splitlines()[0]}); "
                    "training the teacher from scratch"
                )
    return make_online_model(mcfg, n_neurons, image_shape), "trained from scratch"


def _rates(models, images: np.ndarray, device: torch.device, batch: int = 128) -> torch.Tensor:
    """(P, N) rates of models on uint8 images, on the CPU."""
    with torch.no_grad():
        out = []
        for i in range(0, len(images), batch):
            x = to_tensor(images[i : i + batch]).to(device)
            out.append(torch.stack([m(x) for m in models], 1).float().cpu())
    return torch.cat(out)


def goals(rows: list[dict]) -> dict:
    """The paper's claims as numbers, each with whether it was met here."""
    med = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    ratio = float(np.median([r["params_before"] / r["params_after"] for r in rows]))
    kept = float(np.median([r["r2_teacher_pruned"] / max(r["r2_teacher_unpruned"], 1e-9) for r in rows]))
    out = {
        "median_param_ratio": round(ratio, 2),
        "param_ratio_goal": GOAL_PARAM_RATIO,
        "param_ratio_met": ratio >= GOAL_PARAM_RATIO,
        "median_teacher_r2_kept": round(kept, 3),
        "teacher_r2_kept_goal": GOAL_TEACHER_KEPT,
        "teacher_r2_kept_met": kept >= GOAL_TEACHER_KEPT,
        "median_r2_teacher_unpruned": round(med("r2_teacher_unpruned"), 3),
        "median_r2_teacher_pruned": round(med("r2_teacher_pruned"), 3),
        "median_params_before": med("params_before"),
        "median_params_after": med("params_after"),
    }
    if "teacher_to_compact" in rows[0]:
        # The paper's "thousands of times smaller": the compact model against the whole teacher, one member.
        out["median_teacher_to_compact"] = round(med("teacher_to_compact"), 1)
        out["median_member_to_compact"] = round(med("member_to_compact"), 1)
    if "r_truth_pruned" in rows[0]:
        gap = med("r_truth_teacher") - med("r_truth_pruned")
        out.update(
            {
                "median_r_truth_teacher": round(med("r_truth_teacher"), 3),
                "median_r_truth_unpruned": round(med("r_truth_unpruned"), 3),
                "median_r_truth_pruned": round(med("r_truth_pruned"), 3),
                "truth_gap": round(gap, 3),
                "truth_gap_goal": GOAL_TRUTH_GAP,
                "truth_gap_met": gap <= GOAL_TRUTH_GAP,
            }
        )
    return out


def format_table(rows: list[dict], report: dict) -> str:
    has_truth = "r_truth_pruned" in rows[0]
    head = f"{'neuron':>6} {'params before->after':>22} {'filters per layer':>34} {'r2 teacher (held out)':>22}"
    head += f" {'r truth teacher/unpruned/pruned':>32}" if has_truth else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        filt = f"{'/'.join(map(str, r['filters_before']))} -> {'/'.join(map(str, r['filters_after']))}"
        ratio = r["params_before"] / r["params_after"]
        line = (
            f"{r['neuron']:>6} {r['params_before']:>8}->{r['params_after']:<7} {ratio:>4.1f}x {filt:>34} "
            f"{r['r2_teacher_unpruned']:>10.2f}->{r['r2_teacher_pruned']:<10.2f}"
        )
        if has_truth:
            line += f" {r['r_truth_teacher']:>12.2f}/{r['r_truth_unpruned']:.2f}/{r['r_truth_pruned']:<8.2f}"
        lines.append(line)
    g = report["goals"]
    yes = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines.append(
        f"median parameters {g['median_params_before']:.0f} -> {g['median_params_after']:.0f} "
        f"(ensemble {rows[0]['params_ensemble_per_neuron']} per neuron); "
        f"held-out r2 with the teacher {g['median_r2_teacher_unpruned']:.2f} -> "
        f"{g['median_r2_teacher_pruned']:.2f}"
    )
    lines.append(
        f"goal: {GOAL_PARAM_RATIO:.0f}x fewer parameters: median {g['median_param_ratio']:.1f}x, "
        f"{yes(g['param_ratio_met'])}; >= {GOAL_TEACHER_KEPT:.0%} of the unpruned r2 with the teacher: "
        f"median {g['median_teacher_r2_kept']:.0%}, {yes(g['teacher_r2_kept_met'])}"
    )
    if has_truth:
        lines.append(
            f"goal: r with the truth within {GOAL_TRUTH_GAP} of the teacher's: teacher "
            f"{g['median_r_truth_teacher']:.2f}, compact {g['median_r_truth_pruned']:.2f}, "
            f"{yes(g['truth_gap_met'])}"
        )
    if "median_teacher_to_compact" in g:
        r = rows[0]
        lines.append(
            f"teacher {r['params_teacher_ensemble']:,} parameters ({report['teacher']['members']} members of "
            f"{r['params_teacher_member']:,}): a compact model is {g['median_teacher_to_compact']:,.0f}x smaller "
            f"than the ensemble, {g['median_member_to_compact']:,.0f}x smaller than one member (median); "
            f"pruning alone {g['median_param_ratio']:.1f}x"
        )
    if "teacher_from" in report:
        lines.append(f"teacher: {report['teacher_from']}, {report['steps']['ensemble']} steps here")
    s = report["stage_seconds"]
    lines.append(
        f"{report['seconds']:.0f} s on {report['device']} (" + ", ".join(f"{k} {v:.0f} s" for k, v in s.items()) + ")"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pages


def bounded_meis(models, cap_hz: list[float], init: np.ndarray, steps: int) -> np.ndarray:
    """One MEI per model, driven towards the top of its trained range and not past it.

    Gradient ascent (stimulus/synthesis.py) on cap - |rate - cap| from each neuron's best pool
    image: the best image reaches the cap and no image is rewarded for going beyond the rates
    the model was trained on, where its predictions are extrapolation.
    """
    from stimulus.synthesis import from_pixels, synthesize, to_pixels

    caps = torch.tensor(cap_hz, dtype=torch.float32)

    def objective(x: torch.Tensor) -> torch.Tensor:
        rates = torch.stack([m(x[i : i + 1])[0] for i, m in enumerate(models)])
        return caps - (rates - caps).abs()

    # No jitter: the image scored must be the image returned, or the best-kept image can sit
    # above the bound while a shifted copy of it scored below.
    result = synthesize(objective, from_pixels(init), max_steps=steps, step_size=0.03)
    return to_pixels(result.images)


def write_pages(
    models,
    rows: list[dict],
    pool: np.ndarray,
    out_dir: Path,
    mei_steps: int,
    device: torch.device,
    seed: int,
    population=None,
    progress=None,
) -> list[dict]:
    """neuron_NNN.png per model; returns per neuron what the page shows about its MEI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m.to("cpu").eval() for m in models]
    for m in models:
        for p in m.parameters():
            p.requires_grad_(False)
    pool_rates = _rates(models, pool, torch.device("cpu"))
    best = [int(torch.argmax(pool_rates[:, n])) for n in range(len(models))]
    # Model n is recorded neuron rows[n]["neuron"]: its column in the virtual cortex's rates.
    own = (np.arange(len(models)), np.array([r["neuron"] for r in rows]))
    caps = [r["trained_rate_range_hz"][1] for r in rows]
    # Each MEI starts from the pool image the model rates highest within its trained range
    # (a model may rate some pool images above it), so the ascent starts inside the range.
    starts = []
    for n, cap in enumerate(caps):
        inside = torch.where(pool_rates[:, n] <= cap, pool_rates[:, n], torch.tensor(-float("inf")))
        starts.append(
            int(torch.argmax(inside)) if torch.isfinite(inside.max()) else int(torch.argmin(pool_rates[:, n]))
        )
    meis = bounded_meis(models, caps, pool[starts], mei_steps)
    with torch.no_grad():
        mei_rates = [float(m(to_tensor(meis[n : n + 1]))[0]) for n, m in enumerate(models)]
    true_mei = population.rates(meis)[own] if population else None
    true_pool_best = population.rates(pool[best])[own] if population else None
    out = []
    for n, m in enumerate(models):
        row = rows[n]
        lo, hi = row["trained_rate_range_hz"]
        extrapolates = mei_rates[n] > hi * 1.02
        info = {"mei_predicted_hz": mei_rates[n], "mei_extrapolates": bool(extrapolates)}
        if true_mei is not None:
            info["mei_true_hz"] = float(true_mei[n])
            info["best_pool_true_hz"] = float(true_pool_best[n])
        out.append(info)
        _draw_page(plt, m, row, info, meis[n], pool, pool_rates[:, n], out_dir / f"neuron_{row['neuron']:03d}.png")
        if progress is not None:
            progress(n + 1)
    return out


def _draw_page(
    plt, m, row: dict, info: dict, mei: np.ndarray, pool: np.ndarray, pool_rates: torch.Tensor, path: Path
) -> None:
    lo, hi = row["trained_rate_range_hz"]
    top = torch.argsort(pool_rates, descending=True)[:4].tolist()
    fig = plt.figure(figsize=(14, 6.2))
    grid = fig.add_gridspec(2, 6, height_ratios=[1, 1.05], width_ratios=[1, 1, 1, 1, 1, 1.3])
    mei_title = f"MEI {info['mei_predicted_hz']:.0f} sp/s"
    if "mei_true_hz" in info:
        mei_title += f" (true {info['mei_true_hz']:.0f})"
    mei_title += (
        f"\nEXTRAPOLATES: trained max {hi:.0f}" if info["mei_extrapolates"] else f"\nbounded by trained max {hi:.0f}"
    )
    _show(fig.add_subplot(grid[0, 0]), mei, mei_title)
    for j, i in enumerate(top):
        _show(fig.add_subplot(grid[0, 1 + j]), pool[i], f"pool #{i}: {float(pool_rates[i]):.0f} sp/s")
    ax = fig.add_subplot(grid[0, 5])
    ax.axis("off")
    text = [
        "parameters",
        f"  {row['params_before']:,} -> {row['params_after']:,}",
        f"  {row['params_before'] / row['params_after']:.1f}x fewer",
        f"  (ensemble {row['params_ensemble_per_neuron']:,})",
        "held-out r2 with teacher",
        f"  unpruned {row['r2_teacher_unpruned']:.2f}",
        f"  pruned {row['r2_teacher_pruned']:.2f}",
    ]
    if "r_truth_pruned" in row:
        text += [
            "held-out r with truth:",
            f"  teacher {row['r_truth_teacher']:.2f}",
            f"  unpruned {row['r_truth_unpruned']:.2f}",
            f"  pruned {row['r_truth_pruned']:.2f}",
        ]
    ax.text(0, 1.05, "\n".join(text), va="top", family="monospace", fontsize=8)
    # Kept filters drawn: the first conv's kernels (colour), the readout maps, counts per layer.
    sd = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    conv0 = sd["conv0.weight"]  # (F0, C, k, k)
    ax = fig.add_subplot(grid[1, 0:2])
    ax.imshow(_tile(conv0), interpolation="nearest")
    ax.set_title(f"layer 0: {conv0.shape[0]} kept kernels", fontsize=8)
    ax.axis("off")
    ro = sd["readout_weight"]  # (F_last, m, m)
    ax = fig.add_subplot(grid[1, 2:4])
    lim = float(ro.abs().max()) or 1.0
    ax.imshow(_tile(ro[:, None], colour=False), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(f"readout maps of the {ro.shape[0]} kept last-layer filters", fontsize=8)
    ax.axis("off")
    ax = fig.add_subplot(grid[1, 4:6])
    layers = np.arange(len(row["filters_before"]))
    ax.bar(layers - 0.2, row["filters_before"], 0.4, color="0.75", label="distilled")
    ax.bar(layers + 0.2, row["filters_after"], 0.4, color="0.2", label="pruned")
    for x, f in zip(layers, row["filters_after"]):
        ax.text(x + 0.2, f, str(f), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(layers)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("filters", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"neuron {row['neuron']}", fontsize=10)
    # Fixed margins: tight_layout is slow for a page of this many panels.
    fig.subplots_adjust(left=0.03, right=0.99, top=0.88, bottom=0.08, wspace=0.25, hspace=0.35)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _tile(w: torch.Tensor, colour: bool = True) -> np.ndarray:
    """Kernels (F, C, k, k) on a grid with a one-pixel gap; colour kernels scaled each to [0, 1]."""
    f, c, k, _ = w.shape
    cols = int(np.ceil(np.sqrt(f * 2)))
    rows = int(np.ceil(f / cols))
    if colour and c == 3:
        canvas = np.ones((rows * (k + 1), cols * (k + 1), 3))
    else:
        canvas = np.full((rows * (k + 1), cols * (k + 1)), np.nan)
    for i in range(f):
        r, q = divmod(i, cols)
        img = w[i].numpy()
        if colour and c == 3:
            img = img.transpose(1, 2, 0)
            span = np.abs(img).max() or 1.0
            img = 0.5 + 0.5 * img / span
        elif c == 3:
            img = img.mean(0)
        else:
            img = img[0]
        canvas[r * (k + 1) : r * (k + 1) + k, q * (k + 1) : q * (k + 1) + k] = img
    return canvas


def _show(ax, img: np.ndarray, title: str) -> None:
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=7.5)
    ax.axis("off")


def read_session(
    session_dir: str | Path, rig_file: str | None = None, log=print
) -> tuple[np.ndarray, np.ndarray, float, RigConfig]:
    """(images uint8, counts, window_s, rig) of the valid responses of a stored session.

    The rig is the one stored with the session; if it no longer validates (the rig format
    changed since it was recorded), `rig_file` is used in its place, or the error says to give one.
    """
    from controller.config import RigFileError
    from records.store import SessionStore

    store = SessionStore.open(Path(session_dir))
    try:
        stored = json.loads(store.rig_json())
        resp = store.responses(valid_only=True)
    finally:
        store.close()
    try:
        rig = parse_rig(stored, f"{session_dir} (stored rig)", stored=True)
    except RigFileError as e:
        if rig_file is None:
            raise SystemExit(
                f"{e}\nThe session's stored rig does not validate with this version of cortexloop; "
                f"give the rig file it was recorded with: --rig FILE"
            ) from None
        log(f"the stored rig does not validate with this version ({str(e).splitlines()[0]}); using {rig_file}")
        rig = load_rig(rig_file)
    if len(resp["counts"]) == 0:
        raise SystemExit(f"{session_dir}: no valid responses stored; nothing to compress")
    return resp["pixels"], resp["counts"], resp["window_s"], rig


def compress_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="cortexloop compress", description="distill and prune one compact CNN per neuron from a stored session"
    )
    ap.add_argument("session", help="session directory (holds session.sqlite)")
    ap.add_argument("--out", help="output directory (default SESSION/compact)")
    ap.add_argument(
        "--rig",
        help="rig file whose [model] and [compression] sections replace the stored ones (e.g. rigs/paper.toml); "
        "used whole where the stored rig no longer validates",
    )
    ap.add_argument(
        "--ensemble-steps",
        type=int,
        default=100,
        help="teacher training steps (default 100), on top of the session's checkpoint where it has one",
    )
    ap.add_argument("--distill-steps", type=int, help="overrides compression.distill_steps")
    ap.add_argument("--retrain-steps", type=int, help="overrides compression.retrain_steps")
    ap.add_argument(
        "--neurons",
        help="recorded neurons to compress, e.g. 0,3,7 or 0-4 (default all); the teacher still learns every neuron",
    )
    ap.add_argument("--mei-steps", type=int, default=60, help="gradient steps of each page's MEI (default 60)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument(
        "--cluster",
        metavar="ray[:ADDRESS]",
        help="run the per-neuron work as Ray tasks: 'ray' joins the cluster RAY_ADDRESS names or starts one on this "
        "machine, 'ray:ADDRESS' (e.g. ray:10.0.0.5:6379, ray:auto) joins that one; needs pip install "
        "'cortexloop[cluster]' (docs/compress.md#compress-on-a-cluster)",
    )
    ap.add_argument(
        "--neurons-per-task", type=int, default=1, help="neurons trained together in one Ray task (default 1)"
    )
    ap.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="times Ray runs a task again whose worker died (default 3); a task that raises is not retried",
    )
    ap.add_argument(
        "--restart",
        action="store_true",
        help="discard the neurons the output directory holds and compress every one again (default: resume, "
        "compressing only the neurons not done with the same session and settings)",
    )
    args = ap.parse_args(argv)
    runner = None
    if args.cluster:
        from models.compress_cluster import ray_runner

        try:
            runner = ray_runner(args.cluster, neurons_per_task=args.neurons_per_task, max_retries=args.max_retries)
        except ValueError as e:
            raise SystemExit(f"cortexloop compress: {e}") from None
    images, counts, window_s, rig = read_session(args.session, args.rig)
    try:
        neurons = check_neurons(parse_neurons(args.neurons), counts.shape[1]) if args.neurons else None
    except ValueError as e:
        raise SystemExit(f"cortexloop compress {args.session}: {e}") from None
    given = rig if args.rig is None else load_rig(args.rig)
    updates = {
        k: v
        for k, v in {"distill_steps": args.distill_steps, "retrain_steps": args.retrain_steps}.items()
        if v is not None
    }
    rig = rig.model_copy(update={"model": given.model, "compression": given.compression.model_copy(update=updates)})
    out = Path(args.out) if args.out else Path(args.session) / "compact"
    compress_from_arrays(
        images,
        counts,
        window_s,
        rig,
        out,
        ensemble_steps=args.ensemble_steps,
        mei_steps=args.mei_steps,
        progress=not args.no_progress,
        teacher_checkpoint=Path(args.session) / "checkpoints" / "model.pt",
        neurons=neurons,
        runner=runner,
        restart=args.restart,
    )
    print(f"models, pages and report.json written to {out}")
    return 0
