"""The `cortexloop` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from controller.config import RigFileError, load_rig, with_overrides

BENCHES = (
    "training",
    "presentation",
    "efficiency",
    "discrimination",
    "mei",
    "ingest",
    "faults",
    "day-two",
    "compress-scale",
    "interpret",
)


def _load(path: str):
    try:
        return load_rig(path)
    except RigFileError as err:
        print(f"cortexloop: {err}", file=sys.stderr)
        raise SystemExit(2)


def _apply_flags(rig, args):
    session, display = {}, {}
    if getattr(args, "speed", None):
        session["speed"] = args.speed
    if getattr(args, "trials", None):
        session["n_trials"] = args.trials
    if getattr(args, "store", None):
        session["store_dir"] = args.store
    if getattr(args, "presenter", None):
        display["presenter"] = args.presenter
    return with_overrides(rig, session=session, display=display) if (session or display) else rig


def cmd_check(args) -> int:
    rig = _load(args.rig)
    if args.live:
        from controller.live_check import check_live

        if args.endpoints:
            endpoints = json.loads(Path(args.endpoints).read_text())
        else:
            unresolved = [k for k, v in rig.endpoints.model_dump().items() if v == "auto"]
            needed = {"acquisition_pub", "acquisition_events"} if rig.cortex.source == "virtual" else set()
            if needed & set(unresolved):
                print(
                    f'cortexloop: {args.rig}: endpoints {sorted(needed & set(unresolved))} are "auto" (sockets in '
                    f"a session directory): give --endpoints SESSION/endpoints.json, or tcp endpoints in the rig "
                    f"file",
                    file=sys.stderr,
                )
                return 2
            endpoints = {k: v for k, v in rig.endpoints.model_dump().items() if v not in ("auto", "off")}
        return 0 if check_live(rig, endpoints, seconds=args.seconds) else 1
    print(json.dumps(rig.model_dump(), indent=2))
    from transport.security import keys_for

    keys_for(rig)  # the key files themselves: missing, readable by others, no secret half (SecurityError)
    c = rig.cortex
    neurons = {
        "virtual": f"{c.population.n_neurons} virtual neurons",
        "openephys": f"{len(c.openephys.units) if c.openephys else 0} Open Ephys units",
        "lsl": f"{c.lsl.n_neurons if c.lsl else 0} LSL units",
    }[c.source]
    print(
        f"\n{args.rig}: OK (trial {rig.trial_duration_ms:.0f} ms, {neurons}, "
        f"{rig.images.size_px} px images, model {rig.model.kind} on {rig.model.device})",
        file=sys.stderr,
    )
    return 0


def cmd_run(args) -> int:
    from transport.launch import SessionFailed, run_session

    if args.resume:
        session_dir = Path(args.resume)
        if not (session_dir / "session.sqlite").exists():
            print(f"cortexloop: {session_dir}: no session to resume (no session.sqlite)", file=sys.stderr)
            return 2
        rig = _load(str(session_dir / "rig.json"))
        try:
            summary = run_session(rig, session_dir, resume=True)
        except SessionFailed as err:
            print(f"cortexloop: {err}", file=sys.stderr)
            return 1
        return _ended(summary)
    if not args.rig:
        print("cortexloop: run needs a rig file (or --resume SESSION)", file=sys.stderr)
        return 2
    rig = _apply_flags(_load(args.rig), args)
    try:
        summary = run_session(rig, Path(args.session_dir) if args.session_dir else None)
    except SessionFailed as err:
        print(f"cortexloop: {err}", file=sys.stderr)
        return 1
    return _ended(summary)


def _ended(summary: dict) -> int:
    """The end of `cortexloop run` at the terminal: how the session ended and, where it can go on, the command
    that resumes it; the exit code (0: completed)."""
    from records.summary import resume_command

    status = summary.get("status")
    if status != "completed":
        hint = resume_command(summary)
        said = f"; resume with: {hint}" if hint and "--resume" not in str(status) else ""
        print(f"cortexloop: session ended: {status}{said}", file=sys.stderr, flush=True)
    return 0 if status == "completed" else 1


def cmd_serve(args) -> int:
    """Run one process of a session (the launcher uses this; so does a rig spread over machines)."""
    from transport.launch import new_session_dir, prepare_session_dir

    if not args.rig:
        print("cortexloop: serve needs --rig RIG", file=sys.stderr)
        return 2
    rig = _load(args.rig)
    if args.speed:
        rig = with_overrides(rig, session={"speed": args.speed})
    session_dir = Path(args.session_dir) if args.session_dir else new_session_dir(rig)
    if args.endpoints:
        endpoints = json.loads(Path(args.endpoints).read_text())
    else:
        endpoints = prepare_session_dir(rig, session_dir)
    parent = args.parent_pid
    if args.role == "controller":
        from controller.session import rig_truth, run_controller
        from controller.status import StatusBoard
        from controller.worlds import process_parts

        truth = rig_truth(rig)
        from transport.links import parent_alive

        epoch = 0
        if args.resume:  # the resumed recording's stream gets a label of its own (an LSL source's batch numbers)
            from records.resume import resume_epoch

            epoch = resume_epoch(session_dir)

        from records.space import is_disk_full
        from records.summary import format_table

        log_file, summary = open(session_dir / "logs" / "controller.log", "a"), {}
        try:
            summary = run_controller(
                rig,
                session_dir,
                process_parts(rig, endpoints, epoch),
                truth=truth,
                board=StatusBoard(rig.session.n_trials, truth, log_file=log_file),
                resume=args.resume,
                launcher_alive=lambda: parent_alive(parent),
            )
            print(format_table(summary), file=log_file, flush=True)
        except OSError as err:  # the log's disk is full: the summary went to the terminal and summary.json
            if not is_disk_full(err):
                raise
        finally:
            try:
                log_file.close()
            except OSError:
                pass
        return 0 if summary.get("status") == "completed" else 1
    if args.role == "cortex":
        from transport.processes.acquisition import VirtualCortexService as Service

        service = Service(rig, endpoints, parent_pid=parent, epoch=args.epoch, clock_start_s=args.clock_start)
    elif args.role == "presenter":
        from transport.processes.presenter import PresenterService as Service

        service = Service(rig, endpoints, parent_pid=parent, clock_start_s=args.clock_start)
    else:
        from transport.processes.model_worker import ModelWorkerService as Service

        service = Service(rig, endpoints, parent_pid=parent, session_dir=session_dir)
    try:
        return service.run()
    except KeyboardInterrupt:
        return 0
    finally:
        service.close()


def cmd_replay(args) -> int:
    from controller.replay import run_replay
    from records.store import StoreError

    src = Path(args.session)
    out = Path(args.out) if args.out else src.parent / f"{src.name}-replay-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        summary = run_replay(src, out)
    except StoreError as err:
        print(f"cortexloop: {err}", file=sys.stderr)
        return 2
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"{k:<{width}}  {v}")
    return 0 if summary["responses_identical"] == summary["responses_recorded"] else 1


def cmd_export_nwb(args) -> int:
    from records.nwb import export_nwb
    from records.store import StoreError

    out = Path(args.out) if args.out else Path(args.session) / "session.nwb"
    try:
        result = export_nwb(Path(args.session), out)
    except StoreError as err:
        print(f"cortexloop: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        return _write_failed(out, "NWB file", err)
    print(json.dumps(result, indent=2))
    return 0


def _write_failed(out: Path, what: str, err: OSError) -> int:
    """A report or NWB file that could not be written (nothing is left at `out`): say why, without a traceback."""
    from records.space import free_mb, is_disk_full

    full = is_disk_full(err) or free_mb(out.parent) < 1.0  # h5py's write errors do not always carry ENOSPC
    why = "disk full" if full else (err.strerror or str(err))
    hint = "free space there, or give --out on another disk" if full else "check the path"
    print(f"cortexloop: {why} at {out.parent}: no {what} written ({hint})", file=sys.stderr)
    return 1


def cmd_report(args) -> int:
    from records.report import write_report
    from records.store import StoreError

    out = Path(args.out) if args.out else Path(args.session) / "report.html"
    try:
        out = write_report(Path(args.session), out)
    except StoreError as err:
        print(f"cortexloop: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        return _write_failed(out, "report", err)
    print(f"report: {out}")
    return 0


def cmd_cortex_sheet(args) -> int:
    from acquisition.population import Population
    from acquisition.sheet import draw_cortex_sheet
    from stimulus.pools import make_pools

    rig = _load(args.rig)
    pop = Population(rig.cortex.population, rig.images.size_px, rig.images.colour)
    pools = make_pools(rig.images)
    natural = [k == "natural" for k in pools.train_kind]
    out = draw_cortex_sheet(pop, pools.train, Path(args.out), title=str(args.rig), natural=natural)
    print(f"cortex sheet: {out}")
    return 0


def cmd_rig_reference(args) -> int:
    from controller.rig_doc import rig_reference, write_rig_reference

    if args.out:
        print(f"rig-file reference: {write_rig_reference(args.out)}")
    else:
        sys.stdout.write(rig_reference())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cortexloop", description="Closed-loop experiment controller for visual neurophysiology."
    )
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser(
        "check",
        help="validate a rig file and print the resolved config; --live: check the rig's "
        "acquisition stream, event output and display",
    )
    c.add_argument("rig")
    c.add_argument(
        "--live",
        action="store_true",
        help="wait for the acquisition stream, print each unit's rate, "
        "write a test code, measure the display's refresh",
    )
    c.add_argument("--endpoints", help="--live: JSON file of endpoints (e.g. a session's endpoints.json)")
    c.add_argument("--seconds", type=float, default=3.0, help="--live: how long to count spikes")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("run", help="run a session: cortex, model worker, presenter and controller processes")
    r.add_argument("rig", nargs="?")
    r.add_argument("--resume", metavar="SESSION", help="go on with a stopped session (its own rig file is used)")
    r.add_argument("--speed", choices=["realtime", "max"], help="override session.speed")
    r.add_argument("--trials", type=int, help="override session.n_trials")
    r.add_argument("--store", help="override session.store_dir")
    r.add_argument("--presenter", choices=["auto", "psychopy", "headless"], help="override display.presenter")
    r.add_argument("--session-dir", help="exact session directory (default: STORE/NAME-TIMESTAMP)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("serve", help="run one process of a session")
    s.add_argument("role", choices=["cortex", "presenter", "model", "controller"])
    s.add_argument("--rig", help="rig file")
    s.add_argument("--speed", choices=["realtime", "max"])
    s.add_argument("--session-dir")
    s.add_argument("--endpoints", help="JSON file of resolved endpoints (written by the launcher)")
    s.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    s.add_argument("--resume", action="store_true", help="controller: go on with the session in --session-dir")
    s.add_argument("--epoch", type=int, default=0, help="cortex: how many times the session was resumed")
    s.add_argument(
        "--clock-start", type=float, default=0.0, help="virtual clock: where time starts (a resumed session)"
    )
    s.set_defaults(func=cmd_serve)

    rp = sub.add_parser("replay", help="run a stored session again through the engine, from its recorded stream")
    rp.add_argument("session", help="session directory")
    rp.add_argument("--out", help="directory for the replayed session (default: beside the source)")
    rp.set_defaults(func=cmd_replay)

    nw = sub.add_parser("export-nwb", help="write a stored session as an NWB file")
    nw.add_argument("session", help="session directory")
    nw.add_argument("--out", help="NWB file (default: SESSION/session.nwb)")
    nw.set_defaults(func=cmd_export_nwb)

    rep = sub.add_parser("report", help="write a self-contained HTML page of a stored session's figures")
    rep.add_argument("session", help="session directory")
    rep.add_argument("--out", help="HTML file (default: SESSION/report.html)")
    rep.set_defaults(func=cmd_report)

    sub.add_parser(
        "compress",
        help="distill the session's ensemble into one compact model per neuron, prune, "
        "save (cortexloop compress SESSION --help)",
        add_help=False,
    )

    sub.add_parser(
        "interrogate",
        help="in-silico experiments on the compact models of `compress`: tuning curves, fingerprints, types and "
        "pages (cortexloop interrogate SESSION --help)",
        add_help=False,
    )

    rr = sub.add_parser(
        "rig-reference",
        help="write the rig-file reference (every section and key: type, default, bounds, description) as "
        "Markdown, from the rig schema",
    )
    rr.add_argument("--out", help="Markdown file to write, e.g. docs/rig-file.md (default: print it)")
    rr.set_defaults(func=cmd_rig_reference)

    cs = sub.add_parser("cortex-sheet", help="draw the virtual cortex's population on one page (PNG)")
    cs.add_argument("rig")
    cs.add_argument("--out", required=True, help="PNG file to write")
    cs.set_defaults(func=cmd_cortex_sheet)

    from transport.security import cmd_keys

    k = sub.add_parser(
        "keys",
        help="make a CURVE key pair for a rig across machines: DIR/NAME.key (public) and "
        "DIR/NAME.key_secret (readable by this user only)",
    )
    k.add_argument("dir", help="directory for the two files (made, private to this user, if missing)")
    k.add_argument(
        "--name",
        default="this-machine",
        help="file name of the pair (default: this-machine, the name the example rig files give a "
        "machine's own pair, so one rig file serves every machine; rig-server for the server pair)",
    )
    k.set_defaults(func=cmd_keys)

    b = sub.add_parser("bench", help="benchmarks (print a table; --json FILE writes the figures)")
    b.add_argument("name", choices=BENCHES)
    b.set_defaults(func=None)

    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    if argv[:1] == ["compress"]:
        from models.compress import compress_main

        return compress_main(argv[1:])
    if argv[:1] == ["interrogate"]:
        from models.interrogate import interrogate_main

        return interrogate_main(argv[1:])
    if argv[:1] == ["bench"] and len(argv) > 1 and argv[1] in BENCHES:
        # Everything after the name belongs to the benchmark (its own --help included).
        return importlib.import_module(f"bench.{argv[1].replace('-', '_')}").main(argv[2:])
    args = ap.parse_args(argv)
    from transport.links import EndpointInUse
    from transport.security import SecurityError

    try:
        return args.func(args)
    except SecurityError as err:  # a key file named in [security] is missing or unsafe: say which, no traceback
        print(f"cortexloop: {err}", file=sys.stderr)
        return 2
    except EndpointInUse as err:  # a fixed endpoint another session holds: name it, no traceback
        print(f"cortexloop: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
