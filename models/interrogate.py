"""`cortexloop interrogate SESSION`: in-silico experiments on the compact models, and what each neuron computes.

Reads a session's `compress` output (SESSION/compact: neuron_NNN.pt and teacher.pt), runs the battery of
stimulus/battery.py on every compact model and on the teacher (the ensemble they were distilled from), turns
each neuron's results into a fingerprint and a family (stimulus/fingerprint.py), and, on the simulated rig,
runs the same battery on the virtual cortex's true neurons: once on exactly the stimuli each model saw (so
every tuning curve can be correlated point for point with the truth's) and once on its own (how well the
battery types the true neurons themselves: the ceiling of the typing).

Writes beside the models: `interrogate.json` (every curve, map and fingerprint), an `interpretation` entry per
neuron in `report.json` and a summary under its top-level `interpretation`, and the pages a scientist reads
(`interpret/neuron_NNN.png`, `interpret/population.png`; models/interrogate_pages.py). The experiments, the
typing and the measures against the truth: docs/interpret.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.compress import load_teacher, read_session
from models.save import load_model
from stimulus.battery import LUMA, NeuronBattery, Probe, curve_correlations, resolve, run_battery
from stimulus.fingerprint import FAMILIES, fingerprint, in_words, true_family, type_neuron

# The goals, after the compact models' claim to be interpretable (interrogate.json "goals").
GOAL_CURVE_R = 0.8  # median over neurons and curves of r(model curve, true curve)
GOAL_TYPED = 0.8  # share of neurons typed as their true family
GOAL_TEACHER_GAP = 0.05  # the compact models within this of the teacher, on both measures
MODULATED_FRAC = 0.1  # a true curve counts as tuned when its range is at least this share of the neuron's largest
N_NATURAL = 300  # natural pool images the top images are chosen from


def _to_channels(images: np.ndarray, colour: bool) -> torch.Tensor:
    """(B, S, S, 3) float in [0, 1] -> (B, C, S, S) float32 for a model of the rig's channels."""
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
    if not colour:
        x = torch.einsum("bchw,c->bhw", x, torch.tensor(LUMA, dtype=torch.float32))[:, None]
    return x.contiguous()


class CompactResponder:
    """The compact models, one per neuron (each sees only its own stimuli)."""

    joint = False

    def __init__(self, models: dict[int, torch.nn.Module], colour: bool, batch: int = 256):
        self.models, self.colour, self.batch = models, colour, batch

    def __call__(self, images: np.ndarray, neurons: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(images), len(neurons)))
        with torch.no_grad():
            for a in range(0, len(images), self.batch):
                x = _to_channels(images[a : a + self.batch], self.colour)
                for k, n in enumerate(neurons):
                    out[a : a + len(x), k] = self.models[n](x).float().numpy()
        return out


class TeacherResponder:
    """The teacher: the ensemble's member-mean rates, every neuron in one pass."""

    joint = True

    def __init__(self, predictor, colour: bool, batch: int = 256):
        self.predictor, self.colour, self.batch = predictor, colour, batch

    def __call__(self, images: np.ndarray, neurons: Sequence[int]) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for a in range(0, len(images), self.batch):
                x = _to_channels(images[a : a + self.batch], self.colour)
                outs.append(self.predictor.rates(x).mean(0).float().numpy())
        return np.concatenate(outs)[:, list(neurons)]


class TruthResponder:
    """The virtual cortex's true rates (the population's normalization pool is the whole image's)."""

    joint = True

    def __init__(self, population, colour: bool):
        self.population, self.colour = population, colour

    def __call__(self, images: np.ndarray, neurons: Sequence[int]) -> np.ndarray:
        x = np.asarray(images, np.float32)
        if not self.colour:
            x = (x @ LUMA.astype(np.float32))[..., None]
        return self.population.rates(x)[:, list(neurons)]


def natural_images(rig, n: int = N_NATURAL) -> np.ndarray:
    """(n, S, S, 3) float natural pool images (gaudy ones left out), grey rigs repeated to three channels."""
    from stimulus.pools import make_pools

    pools = make_pools(rig.images)
    idx = [i for i, k in enumerate(pools.train_kind) if k == "natural"][:n]
    imgs = pools.train[idx].astype(np.float64) / 255.0
    return np.repeat(imgs, 3, -1) if imgs.shape[-1] == 1 else imgs


def _summary(rows: list[dict], system: str) -> dict:
    """Median curve r and typing share of one system ('compact' or 'teacher') over the neurons with truth."""
    rs_all, rs_tuned, hits, unexplained, wrong = [], [], 0, 0, 0
    for row in rows:
        t = row["truth"]
        for name, r in row[system]["curve_r"].items():
            if r is None:
                continue
            rs_all.append(r)
            if name in t["tuned_curves"]:
                rs_tuned.append(r)
        got = row[system]["family"]
        if got == t["family"]:
            hits += 1
        elif got == "unexplained":
            unexplained += 1
        else:
            wrong += 1
    n = len(rows)
    return {
        "median_curve_r_tuned": float(np.median(rs_tuned)) if rs_tuned else None,
        "median_curve_r_all": float(np.median(rs_all)) if rs_all else None,
        "n_curves_tuned": len(rs_tuned),
        "n_curves_all": len(rs_all),
        "typed_share": hits / n if n else None,
        "rest_unexplained": unexplained,
        "rest_wrong": wrong,
    }


def confusion(rows: list[dict], system: str) -> dict:
    """{true family: {typed family: count}} over the neurons with truth."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        t, got = row["truth"]["family"], row[system]["family"]
        out.setdefault(t, {f: 0 for f in FAMILIES})
        out[t][got] += 1
    return out


def goals(summary: dict) -> dict:
    c, t = summary["compact"], summary["teacher"]
    rc, rt = c["median_curve_r_tuned"], t["median_curve_r_tuned"]
    n_rest = c["rest_unexplained"] + c["rest_wrong"]
    return {
        "curve_r_goal": GOAL_CURVE_R,
        "curve_r_met": rc is not None and rc >= GOAL_CURVE_R,
        "typed_goal": GOAL_TYPED,
        "typed_met": c["typed_share"] is not None and c["typed_share"] >= GOAL_TYPED,
        "rest_mostly_unexplained": n_rest == 0 or c["rest_unexplained"] > n_rest / 2,
        "teacher_gap_goal": GOAL_TEACHER_GAP,
        "teacher_gap_curve_r": None if rc is None or rt is None else rt - rc,
        "teacher_gap_typed": t["typed_share"] - c["typed_share"],
        "teacher_gap_met": (rc is not None and rt is not None and rt - rc <= GOAL_TEACHER_GAP)
        and t["typed_share"] - c["typed_share"] <= GOAL_TEACHER_GAP,
    }


def battery_json(nb: NeuronBattery) -> dict:
    """A NeuronBattery as plain data: curves (x, y, label), maps and features per experiment."""
    return {
        "blank_hz": nb.blank_hz,
        "experiments": {
            name: {
                "curves": {
                    k: {"x": c.x, "y": c.y, "xlabel": c.xlabel, "period": c.circular} for k, c in r.curves.items()
                },
                "maps": r.maps,
                "features": r.features,
            }
            for name, r in nb.results.items()
        },
    }


def interrogate(
    compact_dir: str | Path,
    rig,
    experiments: Sequence[str] | None = None,
    neurons: Sequence[int] | None = None,
    truth: bool = True,
    pages: bool = True,
    log=print,
    mei_steps: int = 60,
) -> dict:
    """Run the battery on the compact models (and teacher, and truth on a virtual cortex) in `compact_dir`.

    rig: the session's RigConfig (image size, colour, the virtual cortex); mei_steps: gradient steps of each page's
    MEI (as compress draws it: bounded by the trained rate range). Returns interrogate.json's content;
    also writes it, adds `interpretation` to report.json where there is one, and draws the pages.
    FileNotFoundError when compact_dir holds no compact models.
    """
    compact_dir = Path(compact_dir)
    t0 = time.perf_counter()
    files = sorted(compact_dir.glob("neuron_*.pt"))
    if not files:
        raise FileNotFoundError(f"{compact_dir}: no compact models (neuron_NNN.pt); run cortexloop compress first")
    models = {}
    for f in files:
        m, meta = load_model(f)
        models[int(meta.get("neuron", int(f.stem.split("_")[1])))] = m
    chosen = sorted(models) if neurons is None else [n for n in neurons if n in models]
    size, colour = rig.images.size_px, rig.images.colour
    deg_per_px = rig.display.image_size_deg / size
    exps = resolve(experiments)
    probe = Probe(size, colour, deg_per_px, natural=natural_images(rig))
    seconds = {}

    t = time.perf_counter()
    compact = run_battery(CompactResponder(models, colour), chosen, probe, exps)
    seconds["compact"] = round(time.perf_counter() - t, 1)
    teacher = None
    teacher_file = compact_dir / "teacher.pt"
    if teacher_file.exists():
        t = time.perf_counter()
        teacher = run_battery(TeacherResponder(load_teacher(teacher_file), colour), chosen, probe, exps)
        seconds["teacher"] = round(time.perf_counter() - t, 1)
    else:
        log(f"{teacher_file} not found (compressed before teachers were saved): the battery runs on the models only")
    population = None
    if truth and rig.cortex.source == "virtual":
        from acquisition.population import Population

        population = Population(rig.cortex.population, size, colour)
        t = time.perf_counter()
        tr = TruthResponder(population, colour)
        truth_on_compact = run_battery(tr, chosen, probe, exps, follow=compact)
        truth_on_teacher = run_battery(tr, chosen, probe, exps, follow=teacher) if teacher else None
        truth_own = run_battery(tr, chosen, probe, exps)
        seconds["truth"] = round(time.perf_counter() - t, 1)
        types = population.types
        described = population.describe()

    rows = []
    for k, n in enumerate(chosen):
        row: dict = {"neuron": n}
        for name, run in (("compact", compact), ("teacher", teacher)):
            if run is None:
                continue
            fp = fingerprint(run[k], deg_per_px)
            fam, why = type_neuron(fp)
            row[name] = {"family": fam, "reason": why, "words": in_words(fp, fam), "fingerprint": fp}
        if population is not None:
            fp = fingerprint(truth_own[k], deg_per_px)
            fam, why = type_neuron(fp)
            curves = truth_on_compact[k]
            tuned = _tuned_curves(curves)
            row["truth"] = {
                "type": types[n],
                "family": true_family(types[n]),
                "battery_family": fam,
                "words": in_words(fp, fam),
                "fingerprint": fp,
                "described": described[n],
                "tuned_curves": tuned,
            }
            for name, run, on_truth in (
                ("compact", compact, truth_on_compact),
                ("teacher", teacher, truth_on_teacher),
            ):
                if run is None:
                    continue
                rs = curve_correlations(run[k], on_truth[k])
                row[name]["curve_r"] = {c: (None if np.isnan(r) else round(r, 4)) for c, r in rs.items()}
        rows.append(row)

    result: dict = {
        "neurons": rows,
        "experiments": [{"name": e.name, "description": e.description, "shared": e.shared} for e in exps],
        "image_size_px": size,
        "deg_per_px": deg_per_px,
        "families": list(FAMILIES),
        "batteries": {
            "compact": {str(n): battery_json(compact[k]) for k, n in enumerate(chosen)},
        },
    }
    if teacher is not None:
        result["batteries"]["teacher"] = {str(n): battery_json(teacher[k]) for k, n in enumerate(chosen)}
    if population is not None:
        result["batteries"]["truth_on_compact"] = {
            str(n): battery_json(truth_on_compact[k]) for k, n in enumerate(chosen)
        }
        result["batteries"]["truth"] = {str(n): battery_json(truth_own[k]) for k, n in enumerate(chosen)}
        summary = {"compact": _summary(rows, "compact")}
        if teacher is not None:
            summary["teacher"] = _summary(rows, "teacher")
        summary["truth_battery"] = _summary_truth(rows)
        result["summary"] = summary
        result["confusion"] = {s: confusion(rows, s) for s in ("compact", "teacher") if s in rows[0]}
        if teacher is not None:
            result["goals"] = goals(summary)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    result["seconds"] = seconds

    if pages:
        from models.interrogate_pages import write_pages

        t = time.perf_counter()
        write_pages(result, compact_dir / "interpret", models, probe, colour, population, mei_steps)
        seconds["pages"] = round(time.perf_counter() - t, 1)
    (compact_dir / "interrogate.json").write_text(json.dumps(result, indent=None, default=_plain))
    _into_report(compact_dir / "report.json", result)
    log(format_table(result))
    return result


def _summary_truth(rows: list[dict]) -> dict:
    hits = sum(r["truth"]["battery_family"] == r["truth"]["family"] for r in rows)
    return {"typed_share": hits / len(rows) if rows else None}


def _tuned_curves(nb: NeuronBattery) -> list[str]:
    """The curves along which the true neuron is tuned: range at least MODULATED_FRAC of its largest range."""
    ranges = {}
    for r in nb.results.values():
        for name, c in r.curves.items():
            ranges[name] = float(np.ptp(c.y)) if len(c.y) else 0.0
    top = max(ranges.values(), default=0.0)
    return sorted(k for k, v in ranges.items() if top > 0 and v >= MODULATED_FRAC * top)


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    return str(v)


def _into_report(path: Path, result: dict) -> None:
    """Per neuron `interpretation` (family, words, fingerprint; the truth's where known) and a top-level summary."""
    if not path.exists():
        return
    report = json.loads(path.read_text())
    by_neuron = {r["neuron"]: r for r in result["neurons"]}
    for row in report.get("neurons", []):
        got = by_neuron.get(row["neuron"])
        if got is None:
            continue
        entry = {"family": got["compact"]["family"], "words": got["compact"]["words"]}
        entry["fingerprint"] = got["compact"]["fingerprint"]
        if "teacher" in got:
            entry["teacher_family"] = got["teacher"]["family"]
        if "truth" in got:
            entry["true_type"] = got["truth"]["type"]
            entry["true_family"] = got["truth"]["family"]
            entry["curve_r"] = got["compact"].get("curve_r", {})
        entry["page"] = f"interpret/neuron_{row['neuron']:03d}.png"
        row["interpretation"] = entry
    report["interpretation"] = {
        k: result[k] for k in ("summary", "goals", "confusion", "experiments", "seconds") if k in result
    }
    path.write_text(json.dumps(report, indent=1, default=_plain))


def format_table(result: dict) -> str:
    """Per neuron: family (compact / teacher / true), median curve r against the truth; then the goals."""
    rows = result["neurons"]
    has_truth = "truth" in rows[0]
    has_teacher = "teacher" in rows[0]
    head = f"{'neuron':>6} {'compact':>12} {'teacher':>12}"
    if has_truth:
        head += f" {'true type':>16} {'battery on truth':>16} {'curve r compact/teacher':>24}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['neuron']:>6} {r['compact']['family']:>12} {(r['teacher']['family'] if has_teacher else '-'):>12}"
        if has_truth:
            med = []
            for s in ("compact", "teacher"):
                v = [
                    x
                    for c, x in r.get(s, {}).get("curve_r", {}).items()
                    if x is not None and c in r["truth"]["tuned_curves"]
                ]
                med.append(f"{np.median(v):.2f}" if v else "  - ")
            line += f" {r['truth']['type']:>16} {r['truth']['battery_family']:>16} {med[0]:>15}/{med[1]:<8}"
        lines.append(line)
    if "summary" in result:
        s = result["summary"]
        yes = lambda ok: "met" if ok else "MISSED"  # noqa: E731
        for name in ("compact", "teacher"):
            if name not in s:
                continue
            v = s[name]
            lines.append(
                f"{name}: median tuning-curve r with the truth {_num(v['median_curve_r_tuned'])} over "
                f"{v['n_curves_tuned']} tuned curves ({_num(v['median_curve_r_all'])} over all {v['n_curves_all']}); "
                f"typed as the true family {v['typed_share']:.0%}; of the rest {v['rest_unexplained']} "
                f"unexplained, {v['rest_wrong']} wrong"
            )
        lines.append(f"the battery on the true neurons types {s['truth_battery']['typed_share']:.0%} correctly")
        if "goals" in result:
            g = result["goals"]
            lines.append(
                f"goal: median curve r >= {GOAL_CURVE_R}: {yes(g['curve_r_met'])}; typed >= {GOAL_TYPED:.0%}: "
                f"{yes(g['typed_met'])} (rest mostly unexplained: {yes(g['rest_mostly_unexplained'])}); "
                f"teacher within {GOAL_TEACHER_GAP}: {yes(g['teacher_gap_met'])} "
                f"(curve r gap {_num(g['teacher_gap_curve_r'], '+.2f')}, typed gap {g['teacher_gap_typed']:+.2f})"
            )
    sec = result.get("seconds", {})
    lines.append(", ".join(f"{k} {v:.0f} s" for k, v in sec.items()))
    return "\n".join(lines)


def _num(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def interrogate_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="cortexloop interrogate",
        description="in-silico experiments on a session's compact models: tuning curves, fingerprints, types",
    )
    ap.add_argument("session", help="session directory (holds session.sqlite and compact/ from cortexloop compress)")
    ap.add_argument("--compact", help="compress output directory (default SESSION/compact)")
    ap.add_argument("--rig", help="rig file to use where the session's stored rig no longer validates")
    ap.add_argument(
        "--experiments",
        help="comma-separated experiments, built-in names or package.module:name (default all built-in ones)",
    )
    ap.add_argument("--neurons", help="neurons to interrogate, e.g. 0,3,7 or 0-4 (default all compressed)")
    ap.add_argument("--no-truth", action="store_true", help="skip the virtual cortex's true neurons")
    ap.add_argument("--no-pages", action="store_true", help="no PNG pages")
    args = ap.parse_args(argv)
    from models.compress import parse_neurons

    _, _, _, rig = read_session(args.session, args.rig)
    compact_dir = Path(args.compact) if args.compact else Path(args.session) / "compact"
    try:
        neurons = parse_neurons(args.neurons) if args.neurons else None
        exps = [e.strip() for e in args.experiments.split(",")] if args.experiments else None
        if exps is not None:
            resolve(exps)
        interrogate(compact_dir, rig, exps, neurons, truth=not args.no_truth, pages=not args.no_pages)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"cortexloop interrogate {args.session}: {e}") from None
    print(f"interrogate.json, report.json's interpretation and the pages written to {compact_dir}")
    return 0
