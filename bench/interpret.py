"""Benchmark: do the compact models reveal what each simulated neuron computes?

Runs `cortexloop interrogate` (models/interrogate.py) on sessions of the simulated rig that `cortexloop
compress` has been run on: the in-silico battery on every compact model and on the teacher, and on the
virtual cortex's true neurons (on exactly the stimuli each model saw, and on its own). Reported per session:

  - the median correlation between each tuning curve of a model and the truth's on the same stimuli, over
    neurons and curves along which the true neuron is tuned (goal r >= 0.8), and over all curves;
  - the share of neurons typed as their true family (goal >= 80%; a random-CNN unit's right answer is
    "unexplained"), and of the rest how many are "unexplained" rather than wrong;
  - the same for the teacher (goal: the compact models within 0.05 of it on both);
  - the battery's own typing of the true neurons (the ceiling of the typing);
  - the confusion matrices, per neuron its families and curve r.

    cortexloop bench interpret [--session DIR ...] [--json out.json] [--no-pages]

Without --session it takes the newest session under sessions/ of each rig named by --rig-name (default "sim",
the default rig's session.name) whose compact/ holds teacher.pt. Make one with
`cortexloop run rigs/sim.toml` then `cortexloop compress SESSION`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stimulus.fingerprint import FAMILIES


def find_session(store: Path, name: str) -> Path | None:
    """The newest session directory STORE/NAME-* (by modification time) whose compact/ holds teacher.pt."""
    found = [
        p
        for p in store.glob("*")
        if p.is_dir() and (p / "compact" / "teacher.pt").exists() and _session_name(p) == name
    ]
    return max(found, key=lambda p: (p / "compact" / "teacher.pt").stat().st_mtime) if found else None


def _session_name(path: Path) -> str | None:
    rig = path / "rig.json"
    if not rig.exists():
        return None
    try:
        return json.loads(rig.read_text()).get("session", {}).get("name")
    except (json.JSONDecodeError, AttributeError):
        return None


def confusion_table(conf: dict) -> str:
    """Rows: true family; columns: typed family; counts."""
    short = {f: f[:5] for f in FAMILIES}
    corner = "true / typed"
    head = f"{corner:>14} " + " ".join(f"{short[f]:>6}" for f in FAMILIES)
    lines = [head]
    for t, row in conf.items():
        lines.append(f"{t:>14} " + " ".join(f"{row.get(f, 0):>6}" for f in FAMILIES))
    return "\n".join(lines)


def per_type(result: dict, system: str) -> dict:
    """{true type: [typed right, neurons]} for one system."""
    out: dict[str, list[int]] = {}
    for r in result["neurons"]:
        t = r["truth"]["type"]
        out.setdefault(t, [0, 0])
        out[t][1] += 1
        out[t][0] += int(r[system]["family"] == r["truth"]["family"])
    return out


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench interpret` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench interpret", description=__doc__.split("\n")[0])
    ap.add_argument("--session", action="append", help="a session directory with compact/ (repeatable)")
    ap.add_argument(
        "--rig-name",
        action="append",
        help="without --session: the newest session of this session.name (repeatable; default sim)",
    )
    ap.add_argument("--store", default="sessions", help="where to look for sessions (default sessions)")
    ap.add_argument("--no-pages", action="store_true", help="do not draw the pages")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    from models.compress import read_session
    from models.interrogate import format_table, interrogate

    sessions = [Path(s) for s in args.session or []]
    if not sessions:
        for name in args.rig_name or ["sim"]:
            found = find_session(Path(args.store), name)
            if found is None:
                raise SystemExit(
                    f"no session named {name!r} under {args.store}/ with a compress output holding teacher.pt; "
                    f"make one: cortexloop run rigs/{name}.toml, then cortexloop compress SESSION"
                )
            sessions.append(found)
    out = {"sessions": []}
    for session in sessions:
        t0 = time.perf_counter()
        _, _, _, rig = read_session(session)
        print(f"== {session} (rig {rig.session.name}, {rig.cortex.population.n_neurons} neurons)")
        result = interrogate(session / "compact", rig, pages=not args.no_pages, log=lambda s: None)
        print(format_table(result))
        if "confusion" in result:
            for system in ("compact", "teacher"):
                if system in result["confusion"]:
                    print(f"confusion, {system} (rows: true family, columns: typed)")
                    print(confusion_table(result["confusion"][system]))
            pt = per_type(result, "compact")
            print("per true type, compact: " + ", ".join(f"{t} {a}/{n}" for t, (a, n) in pt.items()))
        entry = {
            "session": str(session),
            "rig_name": rig.session.name,
            "image_size_px": rig.images.size_px,
            "n_neurons": len(result["neurons"]),
            "summary": result.get("summary"),
            "goals": result.get("goals"),
            "confusion": result.get("confusion"),
            "per_type": {s: per_type(result, s) for s in ("compact", "teacher") if "truth" in result["neurons"][0]},
            "neurons": [
                {
                    "neuron": r["neuron"],
                    "true_type": r.get("truth", {}).get("type"),
                    "true_family": r.get("truth", {}).get("family"),
                    "battery_on_truth": r.get("truth", {}).get("battery_family"),
                    "compact": r["compact"]["family"],
                    "teacher": r.get("teacher", {}).get("family"),
                    "curve_r_compact": r["compact"].get("curve_r"),
                    "curve_r_teacher": r.get("teacher", {}).get("curve_r"),
                    "tuned_curves": r.get("truth", {}).get("tuned_curves"),
                    "words": r["compact"]["words"],
                }
                for r in result["neurons"]
            ],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        out["sessions"].append(entry)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"written {args.json}")
    return 0
