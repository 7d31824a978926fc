"""cortexloop bench faults: each fault injected into a real multi-process session of the simulated rig.

    cortexloop bench faults [--json out.json] [--faults NAME ...] [--trials N] [--store DIR] [--keep]

Every row is one `cortexloop run` (launcher, controller, virtual cortex, model
worker and headless presenter as their own processes over ZeroMQ ipc sockets)
on rigs/sim.toml made small (8 neurons, a 300-image pool, the baseline model,
100 ms fixation and inter-trial interval), at the speed the fault needs. The
fault is injected from outside, as it would happen on a rig: a signal to one
process, junk or a flood of messages from a process of its own connected to a
socket, or a key of the rig's [rehearsal] section (packet loss, reordering,
a clock jump: acquisition/config.py RehearsalConfig).

Figures per row:

- trials before / after: trials done when the fault was injected, and done
  after it (a resumed session's included); `throughout` where the fault is a
  rig key acting all session long;
- spikes: the virtual cortex's own ledger (`rehearsal.ledger`: one line per
  spike batch it made, with its fate: sent, dropped on purpose, delayed on
  purpose) against the store's spike_batches, per stream, over the batches the
  store's range covers (from its first stored batch to its last). `injected`
  is what the fault dropped on purpose; `lost` is every other spike the
  cortex sent in that range that the store does not hold (must be 0);
  `unrecorded` is what the cortex made after the last stored batch (no
  controller listening: after the session ended, or while it was stopped);
- committed kept: every row of plans, onsets, trials, event codes, spike
  batches and responses the store held when the fault was injected is still
  there, unchanged, at the end;
- recovered: per fault, as the legend printed with the table says;
- status: what the session's summary.json said (the resumed one's, where it
  was resumed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RIG = ROOT / "rigs" / "sim.toml"
PAUSE_S = 3.0  # how long the presenter-stalled fault keeps the presenter stopped
PAUSE_TRIES = 5  # stops at most, until one falls in a trial's frames
SESSION_TIMEOUT_S = 240.0  # one run of a fault's session, with room to spare for a loaded machine
COMMITTED_TABLES = ("plans", "onsets", "trials", "event_codes", "spike_batches", "responses")
# The small filesystem (tmpfs) of the disk-full fault: room for the store's write-ahead log (up to 4 MB before
# SQLite checkpoints it) and a few trials, then filled by another program.
DISK_MB = 16


# -- the faults ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    speed: str  # "realtime" or "max"
    recovered_means: str
    # how: "kill:ROLE", "stop:ROLE", "socket:ENDPOINT", "fill:disk" (the store's disk filled by another program),
    # "" (a rig key acting from the start)
    inject: str = ""
    rehearsal: dict = field(default_factory=dict)  # keys of [rehearsal] for this fault
    rig: dict = field(default_factory=dict)  # other rig keys for this fault, by section
    after_trials: int = 3  # done trials before the fault is injected
    ends_session: bool = False  # the session must end (cleanly); then `--resume` finishes it
    resume: bool = False  # the launcher ends; `cortexloop run --resume` continues the session
    # At least this many trials: a model worker started again needs several seconds (torch, the pools) before its
    # plans are on time again, and "recovered" asks for the model's plans back by the end.
    min_trials: int = 0


CONTINUES = "completed with all its trials, no spike lost outside the injected loss, nothing committed changed"
ENDS = (
    "ended cleanly (summary.json, status naming the cause), nothing committed changed, no spike lost; "
    "then `--resume` completed all its trials"
)

FAULTS = (
    Fault(
        "controller-sigkill",
        "controller SIGKILL mid-session, then cortexloop run --resume",
        "realtime",
        "the launcher wrote summary.json from the store (status: controller stopped (signal SIGKILL)); "
        "`--resume` completed all its trials, no spike lost, nothing committed changed",
        inject="kill:controller",
        resume=True,
    ),
    Fault(
        "model-killed",
        "model worker SIGKILL",
        "realtime",
        CONTINUES + "; the worker was started again and the last plan is the model's",
        inject="kill:model",
        min_trials=16,
    ),
    Fault(
        "model-hung",
        "model worker SIGSTOP (alive, answers nothing)",
        "realtime",
        CONTINUES + "; the worker was replaced and the last plan is the model's",
        inject="stop:model",
        min_trials=16,
    ),
    Fault(
        "presenter-killed",
        "presenter SIGKILL",
        "realtime",
        ENDS,
        inject="kill:presenter",
        ends_session=True,
        resume=True,
    ),
    Fault(
        "packets-dropped",
        "20% of spike batches dropped by the recording system",
        "max",
        CONTINUES + "; every dropped batch counted by the engine",
        rehearsal={"packet_loss": 0.2},
    ),
    Fault(
        "packets-reordered",
        "10% of spike batches sent after the next one",
        "max",
        CONTINUES,
        rehearsal={"reorder": 0.1},
    ),
    Fault(
        "junk+flood controller_inbox",
        "junk frames, then a flood of valid messages, into the controller's inbox",
        "realtime",
        CONTINUES,
        inject="socket:controller_inbox",
        after_trials=2,
    ),
    Fault(
        "junk+flood presenter_plans",
        "junk frames, then a flood of valid messages, into the presenter's plans",
        "realtime",
        CONTINUES,
        inject="socket:presenter_plans",
        after_trials=2,
    ),
    Fault(
        "junk+flood acquisition_events",
        "junk frames, then a flood of valid messages, into the cortex's input",
        "realtime",
        CONTINUES,
        inject="socket:acquisition_events",
        after_trials=2,
    ),
    Fault(
        "junk+flood model",
        "junk frames, then a flood of status requests, into the model worker",
        "realtime",
        CONTINUES,
        inject="socket:model",
        after_trials=2,
    ),
    Fault(
        "junk acquisition_pub",
        "raw bytes (no ZeroMQ handshake) at the cortex's PUB socket",
        "realtime",
        CONTINUES,
        inject="socket:acquisition_pub",
        after_trials=2,
    ),
    Fault(
        "clock-jump",
        "the acquisition clock jumps 2 s forward mid-session",
        "max",
        CONTINUES + "; every response valid",
        rehearsal={"clock_jump_s": 2.0, "clock_jump_after_s": None},
    ),  # None: after 60% of the trials
    Fault(
        "cortex-silent",
        "virtual cortex SIGSTOP (no spikes, codes or heartbeats)",
        "realtime",
        ENDS,
        inject="stop:cortex",
        after_trials=2,
        ends_session=True,
        resume=True,
    ),
    Fault(
        "cortex-killed",
        "virtual cortex (the acquisition process) SIGKILL",
        "realtime",
        ENDS + "; the trials it interrupted are stored naming the cortex, and the terminal showed the status and "
        "the resume command",
        inject="kill:cortex",
        after_trials=2,
        ends_session=True,
        resume=True,
    ),
    Fault(
        "disk-full",
        f"the store's disk (a {DISK_MB} MB tmpfs) filled by another program mid-session; then freed",
        "realtime",
        "ended cleanly: status 'disk full at SESSION: free space or move the session directory, then `cortexloop "
        "run --resume SESSION`' at the terminal, no traceback, the summary written where there was room, the store "
        "whole and nothing committed changed; once the space was freed `--resume` completed all its trials",
        inject="fill:disk",
        ends_session=True,
        resume=True,
        rig={"session": {"min_free_mb": 0.0}},  # no floor: the write that fails is what ends the session
    ),
    Fault(
        "source-stalled",
        "the recording system (heard through Open Ephys) stalls 1.5 s mid-trial: connected, sending nothing, "
        "then goes on",
        "max",
        CONTINUES + "; every response whose window the stall covers stored invalid (none valid) and its image "
        "shown again, a WARNING line at the terminal",
        rehearsal={"stall_after_s": None, "stall_s": 1.5},  # None: 0.4 s into trial 3
    ),
    Fault(
        "presenter-stalled",
        f"presenter SIGSTOP for {PAUSE_S:g} s, then SIGCONT (again, at most {PAUSE_TRIES} times, until a stop "
        "falls in a trial's frames)",
        "realtime",
        CONTINUES + "; every image the stall kept on screen (or blank) off plan stored invalid (none valid) and "
        "shown again, a WARNING line at the terminal",
        inject="pause:presenter",
    ),
)
BY_NAME = {f.name: f for f in FAULTS}


def fault_rig(fault: Fault, n_trials: int, rig_path: Path = DEFAULT_RIG):
    """rigs/sim.toml made small and fast, with the ledger on and the fault's [rehearsal] keys."""
    from controller.config import load_rig, with_overrides

    rig = load_rig(rig_path)
    rehearsal = {**rig.rehearsal.model_dump(), "ledger": True, **fault.rehearsal}
    jump_mid_session = "clock_jump_after_s" in fault.rehearsal and fault.rehearsal["clock_jump_after_s"] is None
    if jump_mid_session:
        rehearsal["clock_jump_after_s"] = 1.0  # placed below, once the trial's duration is known
    cortex = {"population": {**rig.cortex.population.model_dump(), "n_neurons": 8, "seed": 3}}
    rig = with_overrides(
        rig,
        session={"n_trials": n_trials, "speed": fault.speed},
        display={"presenter": "headless"},
        images={"pool_size": 300, "test_size": 40},
        model={"kind": "baseline"},
        fixation={"source": "simulated", "break_probability": 0.0},
        trial={"fixation_ms": 100, "iti_ms": 100},
        cortex=cortex,
        rehearsal=rehearsal,
    )
    if fault.rig:
        rig = with_overrides(rig, **fault.rig)
    if fault.rehearsal.get("stall_s") and fault.rehearsal.get("stall_after_s") is None:
        # Heard through Open Ephys (a stream that says nothing while it stalls). On the virtual clock the recording
        # system's time moves only with the presenter's codes, and the presenter runs at most one trial ahead of
        # the one being collected: the stall begins 0.4 s into trial 3 (after trial 2's last window) and must end
        # before trial 4 does, or the session waits for it (docs/failures.md).
        # The rig's inter-trial interval (300 ms): on the virtual clock nothing comes after a session's last trial,
        # and the stream's clock (its latest sample less clock_margin_ms) must still pass the last window.
        from acquisition.openephys import UnitLayout

        electrodes, sorted_ids = UnitLayout().unit_of(np.arange(rig.cortex.population.n_neurons))
        units = [[int(e), int(u)] for e, u in zip(electrodes, sorted_ids)]  # as the virtual cortex names them
        rig = with_overrides(
            rig,
            trial={"iti_ms": load_rig(rig_path).trial.iti_ms},
            cortex={"source": "openephys", "openephys": {"units": units, "virtual_cortex": True}},
            endpoints={"acquisition_pub": "off"},
        )
        rehearsal["stall_after_s"] = round(3 * rig.trial_duration_ms / 1000 + 0.4, 3)
        rig = with_overrides(rig, rehearsal=rehearsal)
    if jump_mid_session:  # whatever the number of trials, 60% of them are recorded before the jump
        rehearsal["clock_jump_after_s"] = round(0.6 * n_trials * rig.trial_duration_ms / 1000, 3)
        rig = with_overrides(rig, rehearsal=rehearsal)
    return rig


# -- processes ---------------------------------------------------------------------------------------------------
def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
    }


def start_launcher(args: list[str], out_path: Path) -> subprocess.Popen:
    """`cortexloop run ...` as a person would start it; its output to out_path."""
    out = open(out_path, "a")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run", *args], env=_env(), stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        out.close()  # the child holds its own copy


def children(pid: int) -> dict[str, int]:
    """The launcher's `serve ROLE` processes: {role: pid}."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid != pid:
                continue
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"serve" in cmd:
            out[cmd[cmd.index(b"serve") + 1].decode()] = int(d.name)
    return out


def done_trials(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM trials WHERE status='done'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0
    finally:
        con.close()


def wait_for_stretched_image(db: Path, rig, longer_than_s: float, launcher: subprocess.Popen, timeout_s: float) -> bool:
    """Whether a stored trial has a frame interval longer than longer_than_s among its images' frames (from the
    first onset to the end of the last image's blank), within timeout_s."""
    t = rig.timing
    first, last = t.fixation_frames, t.fixation_frames + t.images_per_trial * (t.on_frames + t.off_frames)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and launcher.poll() is None:
        con = sqlite3.connect(db, timeout=30)
        try:
            rows = con.execute("SELECT frame_intervals FROM trials WHERE frame_intervals IS NOT NULL").fetchall()
        finally:
            con.close()
        if any(len(b) and np.frombuffer(b, np.float32)[first:last].max(initial=0) > longer_than_s for (b,) in rows):
            return True
        time.sleep(0.2)
    return False


def wait_for_done(db: Path, n: int, launcher: subprocess.Popen, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and launcher.poll() is None:
        if done_trials(db) >= n:
            return True
        time.sleep(0.2)
    return False


def finish(launcher: subprocess.Popen, timeout_s: float) -> int | None:
    """The launcher's exit code; on timeout, it and its children are killed (None)."""
    try:
        return launcher.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for pid in children(launcher.pid).values():
            _signal(pid, signal.SIGKILL)
        launcher.kill()
        launcher.wait()
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- junk and floods, from a process of their own ------------------------------------------------------------
def _junk_frames(rng: np.random.Generator) -> list[bytes]:
    return [rng.bytes(int(rng.integers(0, 600))) for _ in range(int(rng.integers(1, 4)))]


def attack(endpoint_name: str, endpoint: str, n_junk: int, n_flood: int, out: mp.Queue, max_s: float = 10.0) -> None:
    """Connect to a bound endpoint as its peers do, send junk frames, then a flood of valid messages, each for at
    most max_s / 2 seconds (a socket read only between trials takes a flood slowly: its queue holds 16 plans); report
    what was sent. acquisition_pub is a PUB (nothing is read from its peers): raw bytes without a handshake."""
    import zmq

    from contract import messages as m

    rng = np.random.default_rng(11)
    ctx = zmq.Context()
    sent = {"junk": 0, "flood": 0, "refused": 0, "stopped_at_s": None}
    deadline = time.monotonic() + max_s / 2
    try:
        if endpoint_name == "acquisition_pub":
            sock = ctx.socket(zmq.STREAM)
            sock.connect(endpoint)
            ident = sock.getsockopt(zmq.IDENTITY)
            for _ in range(n_junk):
                if time.monotonic() > deadline:
                    sent["stopped_at_s"] = max_s / 2
                    break
                try:
                    sock.send_multipart([ident, rng.bytes(int(rng.integers(1, 600)))], zmq.NOBLOCK)
                    sent["junk"] += 1
                except zmq.ZMQError:
                    sent["refused"] += 1
                    sock.close(linger=0)  # the PUB hung up on the garbage: connect again
                    sock = ctx.socket(zmq.STREAM)
                    sock.connect(endpoint)
                    ident = sock.getsockopt(zmq.IDENTITY)
                    time.sleep(0.01)
        else:
            kind = zmq.DEALER if endpoint_name == "model" else zmq.PUSH
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.SNDTIMEO, 100)
            sock.connect(endpoint)
            time.sleep(0.2)
            role = {
                "controller_inbox": "presenter",
                "presenter_plans": "controller",
                "acquisition_events": "presenter",
            }.get(endpoint_name, "controller")
            for _ in range(n_junk):
                if time.monotonic() > deadline:
                    sent["stopped_at_s"] = max_s / 2
                    break
                try:
                    sock.send_multipart(_junk_frames(rng))
                    sent["junk"] += 1
                except zmq.Again:
                    sent["refused"] += 1
            deadline = time.monotonic() + max_s / 2
            for i in range(n_flood):
                if time.monotonic() > deadline:
                    sent["stopped_at_s"] = max_s / 2
                    break
                # Valid messages a peer of that socket may send, that ask for nothing harmful: heartbeats, and
                # status requests to the model worker (each answered, to this socket).
                msg = (
                    m.ModelRequest(request_id=10**9 + i, op="status")
                    if endpoint_name == "model"
                    else m.Heartbeat(role=role, seq=i + 1, clock_s=0.0)
                )
                try:
                    m.send(sock, msg)
                    sent["flood"] += 1
                except zmq.Again:
                    sent["refused"] += 1
            if endpoint_name == "model":  # read the answers, as a peer would (the worker sends them anyway)
                end = time.monotonic() + 2.0
                while time.monotonic() < end and sock.poll(200):
                    sock.recv_multipart()
        sock.close(linger=1000)
    finally:
        ctx.term()
        out.put(sent)


def run_attack(endpoint_name: str, session_dir: Path, n_junk: int, n_flood: int) -> dict:
    endpoints = json.loads((session_dir / "endpoints.json").read_text())
    q = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=attack, args=(endpoint_name, endpoints[endpoint_name], n_junk, n_flood, q)
    )
    t0 = time.monotonic()
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"error": "the attacking process did not finish in 60 s"}
    sent = q.get(timeout=5) if not q.empty() else {}
    return {**sent, "seconds": round(time.monotonic() - t0, 2)}


# -- what the store holds against what the cortex made ----------------------------------------------------------
def read_ledger(log: Path) -> tuple[dict[str, dict[int, tuple[int, str]]], list[tuple[str, float, float]]]:
    """The cortex's ledger lines: {stream: {seq: (spikes, fate)}} and the clock jumps (stream, jump_s, at_s)."""
    streams: dict[str, dict[int, tuple[int, str]]] = {}
    jumps = []
    if not log.exists():
        return streams, jumps
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0] == "ledger" and parts[2] == "clock_jump":
            jumps.append((parts[1], float(parts[3]), float(parts[5])))
        elif len(parts) == 5 and parts[0] == "ledger":
            streams.setdefault(parts[1], {})[int(parts[2])] = (int(parts[3]), parts[4])
    return streams, jumps


def spike_accounting(session_dir: Path) -> dict:
    """Per stream and in all: spikes received, dropped on purpose (injected), lost otherwise, made before the
    first or after the last stored batch; batches stored whose spike count differs from the ledger's, and stored
    batches the ledger does not know (both must be 0: else the figures cannot be trusted)."""
    ledger, _ = read_ledger(Path(session_dir) / "logs" / "cortex.log")
    con = sqlite3.connect(Path(session_dir) / "session.sqlite")
    try:
        stored: dict[str, dict[int, int]] = {}
        for stream, seq, neuron in con.execute("SELECT stream, seq, neuron FROM spike_batches"):
            stored.setdefault(stream, {})[seq] = len(neuron) // 2  # uint16 indices
    finally:
        con.close()
    keys = (
        "received",
        "injected",
        "injected_batches",
        "lost",
        "lost_batches",
        "before_first_stored",
        "unrecorded_after_last_stored",
        "count_mismatches",
        "stored_not_in_ledger",
    )
    total = dict.fromkeys(keys, 0)
    per_stream = {}
    for stream in sorted(set(ledger) | set(stored)):
        made, have = ledger.get(stream, {}), stored.get(stream, {})
        row = dict.fromkeys(keys, 0)
        row["stored_not_in_ledger"] = len(set(have) - set(made))
        lo, hi = (min(have), max(have)) if have else (np.inf, -np.inf)
        for seq, (n, fate) in made.items():
            if fate in ("dropped", "stopped"):  # not sent, on purpose (packet_loss, stop_after_s)
                if lo <= seq <= hi:
                    row["injected"] += n
                    row["injected_batches"] += 1
                if seq in have:  # the recording never sent it: the store cannot hold it
                    row["count_mismatches"] += 1
            elif seq in have:
                row["received"] += have[seq]
                row["count_mismatches"] += int(have[seq] != n)
            elif seq < lo:
                row["before_first_stored"] += n
            elif seq > hi:
                row["unrecorded_after_last_stored"] += n
            else:
                row["lost"] += n
                row["lost_batches"] += 1
        per_stream[stream] = row
        for k in keys:
            total[k] += row[k]
    return {**total, "streams": per_stream}


def snapshot(db: Path) -> dict[str, list]:
    """Every committed row of the tables a session must never lose (read in one transaction)."""
    con = sqlite3.connect(db, timeout=30)
    try:
        con.execute("BEGIN")
        return {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in COMMITTED_TABLES}
    finally:
        con.close()


def committed_kept(before: dict[str, list], db: Path) -> tuple[bool, str]:
    after = snapshot(db)
    missing = {t: len(set(rows) - set(after[t])) for t, rows in before.items()}
    bad = {t: n for t, n in missing.items() if n}
    return not bad, ", ".join(f"{n} {t} rows changed or gone" for t, n in bad.items())


def last_plan_source(db: Path) -> str | None:
    """Where the last plan's images came from ("model", or "pool" when the model's plan was late)."""
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT source FROM plans ORDER BY trial_id DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return None if row is None else row[0]


def trials_done_before(session_dir: Path, jump_at_s: float) -> int:
    """Trials whose recorded end code came before the acquisition clock jumped (its own clock, pre-jump)."""
    from contract import messages as m

    con = sqlite3.connect(Path(session_dir) / "session.sqlite")
    try:
        ends = {
            t
            for (t,) in con.execute(
                "SELECT trial_id FROM event_codes WHERE clock='acquisition' AND code=? AND time_s < ?",
                (int(m.Codes.TRIAL_END), jump_at_s),
            )
        }
        done = {t for (t,) in con.execute("SELECT trial_id FROM trials WHERE status='done'")}
    finally:
        con.close()
    return len(ends & done)


def requeued_images(db: Path) -> int:
    """Images planned again because an earlier showing of them gave no valid response (an aborted or interrupted
    trial, a window not covered, an image not shown as planned): plan entries whose reason says "requeued"."""
    con = sqlite3.connect(db)
    try:
        return sum(
            sum(1 for why in json.loads(reasons) if why.startswith("requeued"))
            for (reasons,) in con.execute("SELECT reasons FROM plans")
        )
    finally:
        con.close()


def interrupted_reasons(db: Path) -> list[str]:
    """The distinct reasons stored for trials a stop interrupted."""
    con = sqlite3.connect(db)
    try:
        return [r for (r,) in con.execute("SELECT DISTINCT reason FROM trials WHERE reason LIKE 'interrupted%'")]
    finally:
        con.close()


def user_saw(output: str) -> list[str]:
    """What `cortexloop run` told the person at its terminal about how the session went: its own lines, warnings,
    the summary's status and resume rows."""
    keep = ("cortexloop:", "WARNING", "status ", "resume with ")
    return [ln.strip() for ln in output.splitlines() if ln.startswith(keep)]


def mount_small_disk(path: Path) -> str | None:
    """A DISK_MB tmpfs at path (None), or why it cannot be mounted here (mounting needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(path)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"cannot mount a {DISK_MB} MB tmpfs: {done.stderr.strip() or 'refused'}"


def fill_disk(path: Path) -> int:
    """Take every byte left on the filesystem of path, as another program would (a file `filler`); bytes taken."""
    n = 0
    with open(path / "filler", "ab", buffering=0) as f:
        try:
            while True:
                n += f.write(b"\0" * 4096)
        except OSError:
            pass
    return n


def store_whole(db: Path) -> bool:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


# -- one fault ---------------------------------------------------------------------------------------------------
def run_fault(fault: Fault, workdir: Path, n_trials: int, n_junk: int = 2000, n_flood: int = 20000) -> dict:
    n_trials = max(n_trials, fault.min_trials)
    rig = fault_rig(fault, n_trials)
    session_dir = workdir / fault.name.replace(" ", "-").replace("+", "-")
    if fault.inject == "fill:disk":
        disk = workdir / f"{session_dir.name}.disk"
        why = mount_small_disk(disk)
        if why:
            return {
                "fault": fault.name,
                "what": fault.what,
                "recovered_means": fault.recovered_means,
                "session_dir": str(session_dir),
                "recovered": False,
                "skipped": why,
            }
        try:
            return _run_fault_on(fault, rig, workdir, disk / session_dir.name, n_trials, n_junk, n_flood)
        finally:
            # What the small disk held is kept beside the other sessions (--keep), then the disk goes.
            src = disk / session_dir.name
            if src.exists():
                shutil.copytree(
                    src, session_dir, symlinks=False, dirs_exist_ok=True, ignore=shutil.ignore_patterns("sockets")
                )
            subprocess.run(["umount", "-l", str(disk)], check=False)
    return _run_fault_on(fault, rig, workdir, session_dir, n_trials, n_junk, n_flood)


def _run_fault_on(
    fault: Fault, rig, workdir: Path, session_dir: Path, n_trials: int, n_junk: int, n_flood: int
) -> dict:
    from records.space import summary_path

    rig_file = workdir / f"{session_dir.name}.rig.json"
    rig_file.write_text(rig.model_dump_json())
    out_path = workdir / f"{session_dir.name}.out"
    db = session_dir / "session.sqlite"
    if fault.inject == "fill:disk":  # only the store is on the small disk: the logs (and the ledger) are not
        logs = workdir / f"{session_dir.name}.logs"
        logs.mkdir(exist_ok=True)
        session_dir.mkdir(parents=True, exist_ok=True)
        (session_dir / "logs").symlink_to(logs.resolve(), target_is_directory=True)
    t0 = time.monotonic()
    row: dict = {
        "fault": fault.name,
        "what": fault.what,
        "speed": fault.speed,
        "n_trials": n_trials,
        "recovered_means": fault.recovered_means,
        "session_dir": str(session_dir),
    }
    launcher = start_launcher([str(rig_file), "--session-dir", str(session_dir)], out_path)
    before = None
    trials_before = None
    if fault.inject:
        if not wait_for_done(db, fault.after_trials, launcher, SESSION_TIMEOUT_S):
            finish(launcher, 1.0)
            return {
                **row,
                "recovered": False,
                "error": f"the session did not reach {fault.after_trials} trials before the fault; see {out_path}",
            }
        how, target = fault.inject.split(":")
        before = snapshot(db)
        trials_before = done_trials(db)
        if how == "pause":
            # Stopped, then continued. A stop that falls between trials, in a fixation period or an inter-trial
            # interval changes no image's timing (rightly, nothing is invalid then); the store learns of a trial's
            # frames only after it, so the stop is repeated, at most PAUSE_TRIES times, until a stored trial shows
            # a stretched frame among its images'.
            pid = children(launcher.pid).get(target)
            tries = 0
            while tries < PAUSE_TRIES and launcher.poll() is None:
                tries += 1
                _signal(pid, signal.SIGSTOP)
                time.sleep(PAUSE_S)
                _signal(pid, signal.SIGCONT)
                if wait_for_stretched_image(db, rig, PAUSE_S / 2, launcher, 4.0):
                    break
            row["injected"] = f"SIGSTOP to the {target} process, SIGCONT {PAUSE_S:g} s later ({tries} times)"
        elif how in ("kill", "stop"):
            pid = children(launcher.pid).get(target)
            if pid is None:
                finish(launcher, 1.0)
                return {**row, "recovered": False, "error": f"no {target} process to {how}"}
            _signal(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            row["injected"] = f"{'SIGKILL' if how == 'kill' else 'SIGSTOP'} to the {target} process"
        elif how == "fill":
            row["injected"] = f"{fill_disk(session_dir.parent)} bytes written to fill the store's disk"
        else:
            row["attack"] = run_attack(target, session_dir, n_junk, n_flood)
            row["injected"] = f"junk and flood on {target}"
    elif wait_for_done(db, fault.after_trials, launcher, SESSION_TIMEOUT_S):
        # A fault of the rig file acts all along: what was committed by mid-session must be there at the end too
        # (None where the session was over before it could be read).
        before = snapshot(db)
    code = finish(launcher, SESSION_TIMEOUT_S)
    row["exit_code"] = code
    output = out_path.read_text(errors="replace")
    if code is None:
        return {**row, "recovered": False, "error": f"the session did not end in {SESSION_TIMEOUT_S:.0f} s"}
    written = summary_path(session_dir)  # summary.json, or where it went for lack of room
    first = json.loads(written.read_text()) if written is not None else {}
    row["first_status"] = first.get("status", "no summary.json")
    row["first_summary_written"] = bool(first)
    row["first_summary_at"] = None if written is None else str(written)
    row["first_user_saw"] = user_saw(output)
    row["first_traceback"] = "Traceback" in output
    if fault.inject == "fill:disk":
        row["store_whole"] = store_whole(db)
        (session_dir.parent / "filler").unlink()  # the space freed, as the message asks
    if fault.resume:
        launcher = start_launcher(["--resume", str(session_dir)], out_path)
        row["resume_exit_code"] = finish(launcher, SESSION_TIMEOUT_S)
        output = out_path.read_text(errors="replace")
    row["wall_s"] = round(time.monotonic() - t0, 1)
    summary = json.loads((session_dir / "summary.json").read_text()) if (session_dir / "summary.json").exists() else {}
    spikes = spike_accounting(session_dir) if rig.cortex.source == "virtual" else spike_totals(session_dir)
    done = done_trials(db)
    kept, why = committed_kept(before, db) if before is not None else (None, "not read mid-session")
    if trials_before is None:
        _, jumps = read_ledger(session_dir / "logs" / "cortex.log")
        trials_before = trials_done_before(session_dir, jumps[0][2]) if jumps else None
    row.update(
        {
            "status": summary.get("status", "no summary.json"),
            "trials_done": done,
            "trials_before": trials_before,
            "trials_after": done - (trials_before or 0),
            "trials_aborted": summary.get("trials_aborted"),
            "spikes": spikes,
            "engine_spikes_lost": summary.get("spikes_lost"),
            "engine_batches_lost": summary.get("batches_lost"),
            "batches_out_of_order": summary.get("batches_out_of_order"),
            "responses_valid": summary.get("responses_valid"),
            "responses_invalid": summary.get("responses_invalid"),
            "malformed_messages_dropped": summary.get("malformed_messages_dropped"),
            "plans_late": summary.get("plans_late"),
            "clock_residual_max_ms": (summary.get("clock_alignment") or {}).get("residual_max_ms"),
            "committed_kept": kept,
            "committed_problem": why,
            "launcher_said": [ln for ln in output.splitlines() if ln.startswith("cortexloop:")][-8:],
            "last_plan_source": last_plan_source(db),
            "requeued": requeued_images(db),
            "interrupted_reasons": interrupted_reasons(db),
            "user_saw": user_saw(output)[-12:],
        }
    )
    if fault.name == "source-stalled":  # checked from the stored spikes, not from what the engine decided
        row["valid_uncovered"], row["responses_uncovered"] = valid_over_silences(db, rig.response.max_silence_ms / 1000)
    if fault.name == "presenter-stalled":  # checked from the stored onsets, not from what the engine decided
        row["valid_misshown"], row["responses_misshown"] = valid_misshown(db, rig)
    row["engine_stream_silent"] = summary.get("responses_stream_silent")
    row["engine_misshown"] = summary.get("responses_misshown")
    row["recovered"] = judge(fault, row, n_trials)
    return row


def spike_totals(session_dir: Path) -> dict:
    """spike_accounting for a stream the store names differently from the ledger (Open Ephys, LSL: their batches
    are the source's own, not the cortex's): totals only. received = spikes stored; injected = what the ledger says
    was not published on purpose (a stall); lost = what the ledger says was published less what is stored (spikes
    made after the controller stopped listening count here too)."""
    ledger, _ = read_ledger(Path(session_dir) / "logs" / "cortex.log")
    con = sqlite3.connect(Path(session_dir) / "session.sqlite")
    try:
        stored = sum(len(n) // 2 for (n,) in con.execute("SELECT neuron FROM spike_batches"))
    finally:
        con.close()
    fates = [f for stream in ledger.values() for f in stream.values()]
    sent = sum(n for n, fate in fates if fate not in ("dropped", "stopped"))
    return {
        "received": stored,
        "injected": sum(n for n, fate in fates if fate in ("dropped", "stopped")),
        "lost": max(sent - stored, 0),
        "unrecorded_after_last_stored": "-",
        "count_mismatches": 0,
        "stored_not_in_ledger": max(stored - sent, 0),
        "by": "totals",
    }


def valid_over_silences(db: Path, longer_than_s: float) -> tuple[int, int]:
    """From the stored spikes and recorded event codes alone (what proves an Open Ephys stream live): (valid
    responses whose window overlaps a stretch longer than longer_than_s with neither, responses whose window
    does)."""
    con = sqlite3.connect(db)
    try:
        stamps = [np.frombuffer(b, np.float64) for (b,) in con.execute("SELECT time_s FROM spike_batches")]
        codes = con.execute("SELECT time_s FROM event_codes WHERE clock = 'acquisition'").fetchall()
        t = np.sort(np.concatenate([*stamps, np.array([c for (c,) in codes], np.float64)]))
        rows = con.execute("SELECT window_start_s, window_end_s, valid FROM responses").fetchall()
    finally:
        con.close()
    gaps = [(t[k], t[k + 1]) for k in np.flatnonzero(np.diff(t) > longer_than_s)]
    over = [v for a0, a1, v in rows if any(a0 < b and a < a1 for a, b in gaps)]
    return sum(over), len(over)


def valid_misshown(db: Path, rig) -> tuple[int, int]:
    """From the stored onsets alone: (valid responses of images whose onset-to-next-onset time (for a trial's last
    image: to the trial's last flip) was more than trial.max_frame_error + 1 frames off plan, such images)."""
    t = rig.timing
    frame = 1 / t.refresh_hz
    tol = (rig.trial.max_frame_error + 1) * frame
    con = sqlite3.connect(db)
    try:
        ends = dict(con.execute("SELECT trial_id, end_s FROM trials WHERE status = 'done'").fetchall())
        flips: dict[int, dict[int, float]] = {}
        for tid, idx, flip in con.execute("SELECT trial_id, idx, flip_s FROM onsets"):
            flips.setdefault(tid, {})[idx] = flip
        valid = {(tid, idx): v for tid, idx, v in con.execute("SELECT trial_id, idx, valid FROM responses")}
    finally:
        con.close()
    off = []
    for tid, end in ends.items():
        f = flips.get(tid, {})
        for i, flip in f.items():
            if i + 1 in f:
                took, planned = f[i + 1] - flip, (t.on_frames + t.off_frames) * frame
            else:  # the last image: its on and off frames, then the inter-trial interval to the last flip
                took, planned = end - flip, (t.on_frames + t.off_frames + t.iti_frames - 1) * frame
            if abs(took - planned) > tol:
                off.append(valid.get((tid, i), 0))
    return sum(off), len(off)


def judge(fault: Fault, row: dict, n_trials: int) -> bool:
    """The row's recovered: the fault's own rule (Fault.recovered_means), from the figures."""
    s = row["spikes"]
    clean = (
        s["lost"] == 0
        and s["count_mismatches"] == 0
        and s["stored_not_in_ledger"] == 0
        and row["committed_kept"] is not False
    )
    finished = row["status"] == "completed" and row["trials_done"] == n_trials
    if fault.name == "controller-sigkill":
        return (
            clean
            and finished
            and row["first_summary_written"]
            and "controller stopped (signal SIGKILL)" in row["first_status"]
        )
    first_said = "\n".join(row.get("first_user_saw", []))
    if fault.name == "cortex-killed":
        return (
            clean
            and finished
            and row["first_summary_written"]
            and "the cortex process died" in row["first_status"]
            and bool(row["interrupted_reasons"])
            and all("the cortex process died" in r for r in row["interrupted_reasons"])
            and f"cortexloop run --resume {Path(row['session_dir']).resolve()}" in first_said
        )
    if fault.name == "disk-full":
        return (
            clean
            and finished
            and row["first_summary_written"]
            and row["first_status"].startswith(f"disk full at {row['session_dir']}: free space or move the session")
            and f"`cortexloop run --resume {Path(row['session_dir']).resolve()}`" in first_said
            and not row["first_traceback"]
            and row["store_whole"]
        )
    if fault.ends_session:
        cause = {"presenter-killed": "the presenter process died", "cortex-silent": "acquisition silent"}[fault.name]
        return clean and finished and row["first_summary_written"] and cause in row["first_status"]
    if fault.inject == "kill:model":
        return (
            clean
            and finished
            and any("model worker exited (-9); started again" in ln for ln in row["launcher_said"])
            and row["last_plan_source"] == "model"
        )
    if fault.inject == "stop:model":
        return (
            clean
            and finished
            and any("model worker not answering" in ln and "replaced" in ln for ln in row["launcher_said"])
            and row["last_plan_source"] == "model"
        )
    if fault.name in ("source-stalled", "presenter-stalled"):
        key = "uncovered" if fault.name == "source-stalled" else "misshown"
        said = "the recording stream was silent" if key == "uncovered" else "an image was not shown as planned"
        valid_bad, bad = row[f"valid_{key}"], row[f"responses_{key}"]
        # Images still to be shown again when the last trial is under way get one trial more.
        return (
            clean
            and row["status"] == "completed"
            and row["trials_done"] >= n_trials
            and bad > 0
            and valid_bad == 0
            and row["requeued"] >= bad
            and any(said in ln for ln in row["user_saw"])
        )
    if fault.name == "packets-dropped":
        return clean and finished and row["engine_spikes_lost"] == s["injected"] and s["injected"] > 0
    if fault.name == "clock-jump":
        return clean and finished and row["responses_invalid"] == 0 and row["trials_before"] is not None
    if fault.inject.startswith("socket:"):  # the attack reached the socket: junk sent (and a flood, where one can)
        sent = row.get("attack") or {}
        return (
            clean
            and finished
            and sent.get("junk", 0) > 0
            and (fault.inject == "socket:acquisition_pub" or sent.get("flood", 0) > 0)
        )
    return clean and finished


# -- the table ---------------------------------------------------------------------------------------------------
def format_table(rows: list[dict]) -> str:
    head = (
        "fault",
        "trials before",
        "after",
        "responses valid",
        "requeued",
        "spikes injected",
        "lost",
        "unrecorded",
        "kept",
        "recovered",
        "wall s",
        "status",
    )
    lines = []
    for r in rows:
        r = {
            k: v.replace(r["session_dir"], "SESSION") if isinstance(v, str) and k != "session_dir" else v
            for k, v in r.items()
        }
        s = r.get("spikes") or {}
        tb = r.get("trials_before")
        lines.append(
            (
                r["fault"],
                "throughout" if tb is None and "error" not in r else str(tb),
                str(r.get("trials_after", "-")),
                f"{r['responses_valid']}/{r['responses_valid'] + r['responses_invalid']}"
                if r.get("responses_valid") is not None
                else "-",
                str(r.get("requeued", "-")),
                str(s.get("injected", "-")),
                str(s.get("lost", "-")),
                str(s.get("unrecorded_after_last_stored", "-")),
                {True: "yes", False: "NO"}.get(r.get("committed_kept"), "-"),
                "skipped" if r.get("skipped") else "yes" if r.get("recovered") else "NO",
                str(r.get("wall_s", "-")),
                (
                    f"{r['first_status']}  ->  resumed: {r['status']}"
                    if "first_status" in r and r["first_status"] != r.get("status")
                    else r.get("status", r.get("error", r.get("skipped", "")))
                ),
            )
        )
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head[:-1])]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1]  # noqa: E731
    out = [fmt(head), fmt(tuple("-" * w for w in widths) + ("-" * 6,))]
    out += [fmt(ln) for ln in lines]
    out.append("")
    out.append("recovered means, per fault:")
    out += [f"  {r['fault']}: {r['recovered_means']}" for r in rows]
    out.append("what the terminal of `cortexloop run` said when the fault ended the session, per fault:")
    for r in rows:
        said = [ln.replace(r["session_dir"], "SESSION") for ln in r.get("first_user_saw") or []]
        if said and r.get("first_status") != r.get("status"):
            out.append(f"  {r['fault']}:")
            out += [f"    {ln}" for ln in said[-4:]]
    out.append(
        "spikes: from the virtual cortex's ledger against the store, over the store's range of each stream; "
        "injected = dropped on purpose; lost = sent and not stored (must be 0); unrecorded = made after the "
        "last stored batch (no controller listening). kept: every row committed before the fault is still "
        "there, unchanged. responses valid: of all the session's responses, those kept for training (a "
        "window over lost spikes, or one the stream never passed, is stored invalid). requeued: images planned "
        "again because their first showing gave no valid response (an aborted or interrupted trial, an invalid "
        "window)."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench faults` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument(
        "--faults",
        nargs="+",
        choices=[f.name for f in FAULTS],
        metavar="FAULT",
        help=f"which faults (default all): {', '.join(f.name for f in FAULTS)}",
    )
    ap.add_argument("--trials", type=int, default=8, help="trials per session (default 8)")
    ap.add_argument("--store", help="directory for the sessions (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the sessions")
    args = ap.parse_args(argv)
    if args.trials < 5:
        ap.error("--trials must be at least 5 (faults are injected after 2 or 3 trials)")
    faults = [BY_NAME[n] for n in args.faults] if args.faults else list(FAULTS)
    if args.store:
        workdir = Path(args.store)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="cortexloop-faults-"))
    rows = []
    t0 = time.monotonic()
    try:
        for fault in faults:
            print(f"{fault.name}: {fault.what} ...", file=sys.stderr, flush=True)
            rows.append(run_fault(fault, workdir, args.trials))
            r = rows[-1]
            print(
                f"  {'recovered' if r.get('recovered') else 'NOT recovered'}: {r.get('status', r.get('error'))} "
                f"({r.get('wall_s', '-')} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if not args.store and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"sessions kept in {workdir}", file=sys.stderr)
    print(format_table(rows))
    print(
        f"({len(rows)} sessions in {time.monotonic() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "benchmark": "faults",
                    "cpu_count": os.cpu_count(),
                    "load_average": list(os.getloadavg()),
                    "faults": rows,
                },
                indent=2,
                default=str,
            )
        )
    return 0 if all(r.get("recovered") or r.get("skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
