"""Starting and supervising a session's processes on one machine.

`cortexloop run RIG` starts the virtual cortex (where it is the recording system:
`cortex.source = "virtual"`, or an Open Ephys stream it publishes), the model
worker, the presenter and the controller as separate OS processes (each `cortexloop serve ROLE`), which
talk only over ZeroMQ. The launcher watches them:

- the controller finishing ends the session; the others are told to stop and,
  failing that, terminated;
- the cortex or the presenter dying ends the session cleanly (the controller is
  sent SIGTERM, writes its summary and closes the store);
- the model worker dying, or hanging as the controller reports, does not: it is
  started again from its last checkpoint (at most MAX_MODEL_RESTARTS times), and
  the controller carries on with pool images meanwhile, recording each late plan;
- Ctrl-C does the same as a dying process: clean end, summary, store closed.

Children run in their own process groups (Ctrl-C reaches only the launcher, which
then stops them in order) and exit by themselves if the launcher disappears.
What each failure leaves behind: docs/failures.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from contract.parts import MODEL_RESTART_REQUEST
from controller.config import RigConfig
from records.space import check_free_space, disk_full_message, fallback_summary_path, is_disk_full, summary_path
from transport.links import resolve_endpoints
from transport.security import SecurityError, keys_for

ROLES = ("cortex", "model", "presenter", "controller")


def new_session_dir(rig: RigConfig, root: str | Path | None = None) -> Path:
    """A fresh directory path under root (default session.store_dir): the session name and a time stamp."""
    root = Path(root or rig.session.store_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{rig.session.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{rig.session.name}-{stamp}-{n}"
    return path


def prepare_session_dir(rig: RigConfig, session_dir: Path) -> dict[str, str]:
    """Write the resolved rig and endpoints so every process reads the same ones."""
    session_dir.mkdir(parents=True, exist_ok=True)
    (session_dir / "logs").mkdir(exist_ok=True)
    (session_dir / "rig.json").write_text(rig.model_dump_json(indent=2))
    endpoints = resolve_endpoints(rig.endpoints, session_dir)
    (session_dir / "endpoints.json").write_text(json.dumps(endpoints, indent=2))
    return endpoints


def _spawn(role: str, session_dir: Path, env: dict, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "controller.cli",
        "serve",
        role,
        "--rig",
        str(session_dir / "rig.json"),
        "--session-dir",
        str(session_dir),
        "--endpoints",
        str(session_dir / "endpoints.json"),
        "--parent-pid",
        str(os.getpid()),
        *extra,
    ]
    out = None if role == "controller" else open(session_dir / "logs" / f"{role}.log", "a")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env, start_new_session=True)


def session_roles(rig: RigConfig) -> tuple[str, ...]:
    """The processes this rig's session needs on this machine: the virtual cortex only where it is the
    recording system (a live rig's spikes come from its own acquisition PC)."""
    return tuple(r for r in ROLES if r != "cortex" or rig.cortex.has_virtual_cortex)


def resume_args(session_dir: Path) -> dict[str, list[str]]:
    """What each process of a resumed session is told: the controller to go on from the store, the cortex that
    its stream is a new one, and the virtual clocks to start after the time already recorded."""
    from records.store import SessionStore

    store = SessionStore.open(session_dir)
    try:
        epoch = int(store.meta("resumed") or 0) + 1
        row = store.conn.execute("SELECT MAX(end_s) FROM trials").fetchone()
        start = float(row[0] or 0.0) + 1.0
    finally:
        store.close()
    clock = ["--clock-start", repr(start)]
    return {"controller": ["--resume"], "cortex": ["--epoch", str(epoch), *clock], "presenter": clock}


def carry_status(session_dir: Path) -> None:
    """Before a resume: where the stopped session's status reached only its summary (a full disk refused the
    store's write), the store is given it, so the trials it interrupted are labelled with what stopped it."""
    import sqlite3

    from records.store import SessionStore

    written = summary_path(session_dir)
    if written is None:
        return
    try:
        status = json.loads(written.read_text()).get("status")
    except (OSError, ValueError):
        return
    store = SessionStore.open(session_dir)
    try:
        if status and store.meta("status") in (None, "running"):
            store.set_meta("status", status)
    except sqlite3.Error:
        pass
    finally:
        store.close()


def run_session(rig: RigConfig, session_dir: Path | None = None, env: dict | None = None, resume: bool = False) -> dict:
    """Run a session's processes until the controller ends. resume: go on with the stopped session in
    session_dir (records/resume.py); its summary.json is written anew at the end."""
    session_dir = Path(session_dir) if session_dir else new_session_dir(rig)
    short = check_free_space(rig, session_dir)
    if short:
        raise SessionFailed(short)
    extra = resume_args(session_dir) if resume else {}
    if resume:
        carry_status(session_dir)
        (session_dir / "summary.json").unlink(missing_ok=True)
        fallback_summary_path(session_dir).unlink(missing_ok=True)
        (session_dir / STOP_REASON).unlink(missing_ok=True)
    try:
        prepare_session_dir(rig, session_dir)
    except OSError as err:
        if is_disk_full(err):
            raise SessionFailed(disk_full_message(session_dir, session_dir)) from None
        raise
    try:
        keys_for(rig)  # the key files are read and checked before any process starts: a bad one is named here
    except SecurityError as err:
        raise SessionFailed(str(err)) from None
    env = {**os.environ, **(env or {})}
    if rig.cortex.source == "lsl" or rig.event_output.kind == "lsl":
        from acquisition.lsl_source import lsl_discovery

        lsl_discovery(rig, session_dir, env)  # all on this machine: liblsl's discovery kept on it
    # The children import the packages from where this one did (works without installing too).
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs: dict[str, subprocess.Popen] = {}
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for role in session_roles(rig):
            procs[role] = _spawn(role, session_dir, env, extra.get(role, []))
        model_started, waited_noted = time.time(), False  # wall clock: the controller's request uses it too
        controller = procs["controller"]
        told_controller = False
        model_restarts = 0
        while controller.poll() is None:
            time.sleep(0.1)
            dead = [r for r in ("cortex", "presenter") if r in procs and procs[r].poll() is not None]
            if (dead or interrupted) and not told_controller:
                # The controller ends the session cleanly on SIGTERM; the reason file says why, so its status
                # names the process that died rather than "interrupted".
                code = procs[dead[0]].returncode if dead else None
                why = (
                    f"the {dead[0]} process {'ended' if code == 0 else 'died'} (exit code {code})"
                    if dead
                    else f"interrupted ({signal.Signals(interrupted[0]).name})"
                )
                try:
                    (session_dir / STOP_REASON).write_text(why)
                except OSError as err:  # a full disk: the controller's status says "interrupted" instead
                    print(f"cortexloop: {why} (not recorded: {err.strerror})", file=sys.stderr, flush=True)
                controller.send_signal(signal.SIGTERM)
                told_controller = True
            if len(interrupted) >= 2:  # a second Ctrl-C: stop now, whatever is running
                print(
                    "cortexloop: second interrupt: stopping every process now (the store keeps what was "
                    "committed; cortexloop run --resume goes on from it)",
                    file=sys.stderr,
                    flush=True,
                )
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
                break
            restart = session_dir / MODEL_RESTART_REQUEST
            if restart.exists() and model_restarts < MAX_MODEL_RESTARTS:  # the controller says it is hung
                why, now_hung = restart_verdict(restart, model_started, time.time())
                if now_hung:
                    restart.unlink(missing_ok=True)
                    procs["model"].kill()
                    procs["model"].wait()
                    print(f"cortexloop: model worker not answering ({why}); replaced", file=sys.stderr, flush=True)
                elif not waited_noted:
                    waited_noted = True
                    print(
                        f"cortexloop: model worker not answering ({why}), but it was started "
                        f"{time.time() - model_started:.0f} s ago and has not answered yet: it is starting, and has "
                        f"until {MODEL_START_GRACE_S:.0f} s after its start",
                        file=sys.stderr,
                        flush=True,
                    )
            code = procs["model"].poll()
            # Exit code 0: the worker was told the session is over (the controller is writing its summary).
            if code not in (None, 0) and model_restarts < MAX_MODEL_RESTARTS:
                model_restarts += 1
                print(
                    f"cortexloop: model worker exited ({code}); started again from its "
                    f"last checkpoint (pool images meanwhile)",
                    file=sys.stderr,
                    flush=True,
                )
                procs["model"] = _spawn("model", session_dir, env)
                model_started, waited_noted = time.time(), False
    finally:
        # A controller that ended without its summary (killed, crashed) may not have told the others that the
        # session is over, and nothing else will: they are stopped now rather than after the grace. Nothing of
        # theirs is lost by SIGTERM: the store is the controller's, the cortex's ledger lines are flushed as
        # written, and the model worker's checkpoint is written to a temporary file and renamed into place
        # (ModelWorker.save_checkpoint), so a stop mid-write leaves the last whole one.
        told = "controller" in procs and procs["controller"].poll() is not None and summary_path(session_dir)
        _stop_all(procs, grace_s=10.0 if told else 0.0)
        for s, h in previous.items():
            signal.signal(s, h)
    for role, proc in procs.items():
        if proc.returncode not in (0, None) and role != "controller":
            print(
                f"cortexloop: the {role} process exited with code {proc.returncode}; the end of its log "
                f"({session_dir / 'logs' / (role + '.log')}):\n{_tail(session_dir / 'logs' / (role + '.log'))}",
                file=sys.stderr,
                flush=True,
            )
    written = summary_path(session_dir)
    if written is None:
        # The controller died before it could write one (killed, crashed): the summary comes from the store alone.
        code = procs["controller"].returncode if "controller" in procs else None
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        status = f"controller stopped ({how}); resume with: cortexloop run --resume {session_dir}"
        if not (session_dir / "session.sqlite").exists():
            raise SessionFailed(f"session ended before it had a store; see the logs in {session_dir / 'logs'}")
        from controller.session import summary_from_store

        summary = summary_from_store(rig, session_dir, status)
        print(f"cortexloop: {status}", file=sys.stderr, flush=True)
        return summary
    return json.loads(written.read_text())


MAX_MODEL_RESTARTS = 5  # a worker that keeps dying is left dead: the session goes on with pool images
# A model worker that has not answered since it was started is starting up (torch, the pools, its checkpoint:
# seconds, more on a loaded machine), not hung: the controller's plans are late meanwhile, and its request to
# replace the worker waits this long after the start. A worker that hangs while starting is replaced after it.
MODEL_START_GRACE_S = 60.0


def restart_verdict(request: Path, worker_started_wall: float, now_wall: float) -> tuple[str, bool]:
    """The controller's request to replace the model worker (SessionEngine.ask_model_restart): why, and whether
    to act on it now. Now if the worker the launcher started last has answered the controller since (it hung
    after answering), or has been starting for MODEL_START_GRACE_S; a request that is not the controller's JSON
    is acted on at once."""
    text = request.read_text(errors="replace").strip()
    try:
        req = json.loads(text)
        why, last_reply = str(req["why"]), req["last_reply_wall"]
    except (ValueError, KeyError, TypeError):
        return text, True
    answered = isinstance(last_reply, (int, float)) and last_reply >= worker_started_wall
    return why, answered or now_wall - worker_started_wall >= MODEL_START_GRACE_S


STOP_REASON = "stop_reason"  # written by the launcher before it asks the controller to stop: why


class SessionFailed(RuntimeError):
    pass


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join("    " + x for x in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def _stop_all(procs: dict[str, subprocess.Popen], grace_s: float = 10.0) -> None:
    """Wait up to grace_s for the children to end (they were told to stop; grace_s 0: nobody told them), then
    terminate, then kill."""
    end = time.monotonic() + grace_s
    for p in procs.values():
        if p.poll() is not None:
            continue
        try:
            if grace_s <= 0:
                raise subprocess.TimeoutExpired(p.args, 0)
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
