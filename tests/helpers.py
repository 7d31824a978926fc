"""What the tests share that is not a fixture (fixtures are in tests/conftest.py): the small rigs, starting and
watching real processes, reading a session's store, example messages and hypothesis strategies for them.

No test module imports another (tests/test_layout.py checks it): what two of them need lives here.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from contract import messages as m
from contract.images import image_hash
from contract.parts import InProcessPart
from controller.config import load_rig, with_overrides

ROOT = Path(__file__).resolve().parents[1]
SIM_RIG = ROOT / "rigs" / "sim.toml"


# -- rigs ---------------------------------------------------------------------------------------------------------
def small_rig(**session):
    """The simulated rig, small: 6 trials at max speed, a headless screen, 8 neurons, some fixation breaks."""
    return with_overrides(
        load_rig(SIM_RIG),
        session={"n_trials": 6, "speed": "max", **session},
        display={"presenter": "headless"},
        images={"pool_size": 300, "test_size": 40},
        cortex={"population": {"n_neurons": 8, "seed": 3}},
        fixation={"source": "simulated", "break_probability": 0.15, "seed": 2},
    )


OPENEPHYS_NEURONS = 8


def openephys_rig(rig, **openephys):
    """The same rig, its recording system heard only through the Open Ephys format: neuron k is the virtual
    cortex's unit ("Electrode k+1", k+1), numbered as the GUI's Spike Sorter numbers units."""
    return with_overrides(
        rig,
        cortex={
            "source": "openephys",
            "openephys": {
                "units": [[k + 1, k + 1] for k in range(OPENEPHYS_NEURONS)],
                "virtual_cortex": True,
                **openephys,
            },
        },
        endpoints={"acquisition_pub": "off"},
    )


def short_rig():
    """The default rig, small and on a virtual clock; every image kind, MEIs and repeats within 5 trials (the
    session the report and NWB tests read)."""
    return with_overrides(
        load_rig(SIM_RIG),
        session={
            "n_trials": 5,
            "speed": "max",
            "experimenter": ["Doe, Jane"],
            "institution": "Test Institute",
            "lab": "Vision Lab",
        },
        display={"presenter": "headless"},
        images={"pool_size": 300, "test_size": 40},
        cortex={"population": {"n_neurons": 6, "seed": 3}},
        fixation={"source": "simulated", "break_probability": 0.1, "seed": 2},
        selection={
            "mix": {"random": 0.2, "selected": 0.2, "synthesized": 0.1, "mei": 0.2, "repeat": 0.3},
            "repeat_set_size": 3,
            "model_driven_after": None,  # no cold start: the model chooses from its first version on
        },
    )


class SilentModel(InProcessPart):
    """A model worker that never answers a plan or a prediction: every plan is late. It does answer status
    requests (with no model), as a worker that is running does, so the engine does not wait out its start-up
    limit for a first answer."""

    def __init__(self):
        self.replies: list = []

    def request(self, req):
        if req.op == "status":
            self.replies.append(m.ModelReply(request_id=req.request_id, op="status", model_version=-1))

    def update(self, upd):
        pass

    def poll(self, timeout_s):
        out, self.replies = self.replies, []
        return out


# -- real processes -----------------------------------------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def child_pid(launcher_pid: int, role: str) -> int:
    """The pid of the launcher's `serve ROLE` process."""
    for c in children_of(launcher_pid):
        if f"serve {role}" in open(f"/proc/{c}/cmdline").read().replace("\0", " "):
            return c
    raise AssertionError(f"no {role} process under the launcher")


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def cli_env() -> dict:
    """The environment a `python -m controller.cli` child runs in: this checkout first on its path."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start_launcher(rig, tmp_path: Path, session: str = "k", output=subprocess.PIPE) -> subprocess.Popen:
    """`cortexloop run` in its own process, as a person would start it, on `rig` (written to tmp_path/rig.json)."""
    (tmp_path / "rig.json").write_text(rig.model_dump_json())
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "run",
            str(tmp_path / "rig.json"),
            "--session-dir",
            str(tmp_path / session),
        ],
        env=cli_env(),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def serve(role: str, session_dir: Path, parent_pid: int | None = None, log: bool = False) -> subprocess.Popen:
    """`cortexloop serve ROLE` on a session directory that prepare_session_dir made (its rig.json and
    endpoints.json); log: its output into the session's logs/ROLE.log, else this process's."""
    args = [
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
    ]
    if parent_pid is not None:
        args += ["--parent-pid", str(parent_pid)]
    if not log:
        return subprocess.Popen(args, env=cli_env())
    with open(session_dir / "logs" / f"{role}.log", "a") as out:
        return subprocess.Popen(args, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)


def made_once(tmp_path_factory, name: str, make):
    """make(directory) -> a JSON-able result, run once per test run: under pytest-xdist by whichever worker asks
    first, the others waiting for it and reading what it left (so a session several workers' tests read is
    recorded once). Returns (directory, result)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's own temp dir, above each worker's
    where = root / f"made-once-{name}"
    where.mkdir(exist_ok=True)
    with open(root / f"made-once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = where / "made-once.json"
        if not done.exists():
            result = make(where)
            done.write_text(json.dumps(result))
        return where, json.loads(done.read_text())


def wait_for_trials(db: Path, n: int, where: str = "", timeout_s: float = 120.0) -> None:
    """Until the store holds n trials (matching `where`), or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            con = sqlite3.connect(db)
            try:
                if con.execute(f"SELECT COUNT(*) FROM trials {where}").fetchone()[0] >= n:
                    return
            except sqlite3.OperationalError:  # the file is there before its tables are: not yet
                pass
            finally:
                con.close()
        time.sleep(0.3)
    pytest.fail(f"the session never had {n} trials {where}")


def wait_idle(out, timeout_s: float = 5.0) -> None:
    """Until a TTL event output (parallel or serial) has no word queued and none on its lines, or fail."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if out.stats()["queued"] == 0 and out.lines._clear_at is None:
            return
        time.sleep(0.002)
    raise AssertionError(f"lines still busy after {timeout_s} s: {out.stats()}")


# -- a session's store ----------------------------------------------------------------------------------------------
def stored_responses(path: Path) -> list[tuple]:
    """Every response row of the session in `path`, in trial and image order."""
    db = sqlite3.connect(path / "session.sqlite")
    try:
        return db.execute(
            "SELECT trial_id, idx, image_hash, onset_acq_s, window_start_s, window_end_s, counts, valid, "
            "model_version, source, reason FROM responses ORDER BY trial_id, idx"
        ).fetchall()
    finally:
        db.close()


# -- messages --------------------------------------------------------------------------------------------------------
def of(msgs, kind: type) -> list:
    """The messages of one type."""
    return [x for x in msgs if isinstance(x, kind)]


def encode_frames(msg) -> list[bytes]:
    """A message as the bytes of its frames."""
    return [bytes(f) for f in m.encode(msg)]


def examples() -> list:
    """One valid message of every type."""
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    h = [image_hash(p) for p in px]
    return [
        m.SpikeBatch(
            stream="s",
            seq=4,
            t_start_s=1.0,
            t_end_s=1.02,
            total_spikes=10,
            neuron=np.array([1, 2, 3], np.uint16),
            time_s=np.array([1.001, 1.01, 1.019]),
        ),
        m.EventCode(
            stream="p",
            seq=1,
            code=m.Codes.IMAGE_ONSET,
            time_s=3.5,
            clock="presenter",
            trial_id=2,
            index=1,
            image_hash="abc",
        ),
        m.Heartbeat(role="cortex", seq=9, clock_s=12.0, stream="s"),
        m.ScreenImage(image_hash=h[0], pixels=px[0]),
        m.TrialPlan(
            trial_id=3,
            image_hashes=h,
            fixation_frames=18,
            on_frames=6,
            off_frames=6,
            iti_frames=18,
            refresh_hz=60.0,
            model_version=2,
            source="model",
            reasons=["x", "y", "z"],
            pixels=px,
        ),
        m.OnsetReport(trial_id=3, index=0, image_hash="a", flip_s=0.5, frame=30),
        m.TrialReport(
            trial_id=3,
            status="done",
            start_s=0.1,
            end_s=1.7,
            dropped_frames=0,
            n_onsets=3,
            frame_intervals_s=np.full(5, 1 / 60, np.float32),
        ),
        m.ResponsesUpdate(trial_id=3, image_hashes=h[:1], pixels=px[:1], counts=np.ones((1, 4), np.float32)),
        m.ModelRequest(request_id=1, op="predict", pixels=px),
        m.ModelReply(
            request_id=1, op="predict", model_version=5, rates=np.ones((2, 3, 4), np.float32), info={"k": [1, 2]}
        ),
        m.Shutdown(reason="done"),
    ]


# -- hypothesis: valid messages across their full ranges ------------------------------------------------------------
# No example database: nothing is written into the checkout. Sized so the fuzz file runs in well under 30 s on
# 2 cores; CORTEXLOOP_FUZZ_SCALE=50 runs a fifty times longer campaign.
FUZZ_SCALE = float(os.environ.get("CORTEXLOOP_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=int(100 * FUZZ_SCALE), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

_printable = st.characters(categories=["L", "N", "P", "S"])
names = st.text(_printable, min_size=1, max_size=m.MAX_NAME_CHARS)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)
uint63 = st.integers(0, m.INT64_MAX)
times = st.floats(-m.MAX_ABS_TIME_S, m.MAX_ABS_TIME_S, allow_nan=False)


@st.composite
def images(draw, n_min: int = 1, n_max: int = 3) -> np.ndarray:
    n, h, w, c = (
        draw(st.integers(n_min, n_max)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 6)),
        draw(st.sampled_from(m.IMAGE_CHANNELS)),
    )
    raw = draw(st.binary(min_size=n * h * w * c, max_size=n * h * w * c))
    return np.frombuffer(raw, np.uint8).reshape(n, h, w, c)


@st.composite
def valid_messages(draw):
    kind = draw(st.sampled_from(sorted(m.MESSAGE_TYPES)))
    if kind == "SpikeBatch":
        t0 = draw(times)
        t1 = draw(st.floats(t0, m.MAX_ABS_TIME_S))
        k = draw(st.integers(0, 20))
        neuron = np.array(draw(st.lists(st.integers(0, 65535), min_size=k, max_size=k)), np.uint16)
        t = np.array(draw(st.lists(times, min_size=k, max_size=k)), np.float64)
        return m.SpikeBatch(
            stream=draw(names),
            seq=draw(uint63),
            t_start_s=t0,
            t_end_s=t1,
            total_spikes=draw(st.integers(k, m.INT64_MAX)),
            neuron=neuron,
            time_s=t,
        )
    if kind == "EventCode":
        return m.EventCode(
            stream=draw(names),
            seq=draw(uint63),
            code=draw(st.integers(0, m.MAX_EVENT_CODE)),
            time_s=draw(times),
            clock=draw(st.sampled_from(m.EVENT_CLOCKS)),
            trial_id=draw(st.integers(-1, m.INT64_MAX)),
            index=draw(st.integers(-1, 999)),
            image_hash=draw(st.just("") | names),
        )
    if kind == "Heartbeat":
        info = draw(
            st.dictionaries(
                st.text(max_size=8), st.none() | st.floats() | st.integers(-(2**80), 2**80) | texts, max_size=4
            )
        )
        return m.Heartbeat(
            role=draw(names), seq=draw(uint63), clock_s=draw(times), stream=draw(st.just("") | names), info=info
        )
    if kind == "ScreenImage":
        px = draw(images(1, 1))[0]
        return m.ScreenImage(image_hash=image_hash(px), pixels=px)
    if kind == "TrialPlan":
        px = draw(images())
        frames = st.integers(0, m.MAX_FRAMES)
        return m.TrialPlan(
            trial_id=draw(uint63),
            image_hashes=[image_hash(p) for p in px],
            fixation_frames=draw(frames),
            on_frames=draw(st.integers(1, m.MAX_FRAMES)),
            off_frames=draw(frames),
            iti_frames=draw(frames),
            refresh_hz=draw(st.floats(1.0, m.MAX_REFRESH_HZ)),
            model_version=draw(st.integers(-1, m.INT64_MAX)),
            source=draw(names),
            reasons=[draw(texts) for _ in px],
            pixels=px,
        )
    if kind == "OnsetReport":
        return m.OnsetReport(
            trial_id=draw(uint63),
            index=draw(st.integers(0, 999)),
            image_hash=draw(names),
            flip_s=draw(times),
            frame=draw(uint63),
        )
    if kind == "TrialReport":
        t0 = draw(times)
        finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
        return m.TrialReport(
            trial_id=draw(st.integers(-1, m.INT64_MAX)),
            status=draw(st.sampled_from(m.TRIAL_STATUSES)),
            start_s=t0,
            end_s=draw(st.floats(t0, m.MAX_ABS_TIME_S)),
            dropped_frames=draw(st.integers(0, m.MAX_TRIAL_FRAMES)),
            n_onsets=draw(st.integers(0, m.MAX_PLAN_IMAGES)),
            reason=draw(texts),
            frame_intervals_s=np.array(draw(st.lists(finite32, max_size=10)), np.float32),
            onset_to_flip_error_s=np.array(draw(st.lists(finite32, max_size=5)), np.float32),
        )
    if kind == "ResponsesUpdate":
        px = draw(images())
        k = draw(st.integers(1, 40))
        counts = np.array(
            draw(st.lists(st.floats(0, 1e6, width=32), min_size=len(px) * k, max_size=len(px) * k)), np.float32
        ).reshape(len(px), k)
        return m.ResponsesUpdate(
            trial_id=draw(uint63), image_hashes=[image_hash(p) for p in px], pixels=px, counts=counts
        )
    if kind == "ModelRequest":
        op = draw(st.sampled_from(m.MODEL_OPS))
        return m.ModelRequest(
            request_id=draw(uint63),
            op=op,
            trial_id=draw(st.integers(-1, m.INT64_MAX)),
            n_images=draw(st.integers(0, m.MAX_PLAN_IMAGES)),
            train_steps=draw(st.integers(0, m.MAX_TRAIN_STEPS)),
            **({"pixels": draw(images())} if op == "predict" else {}),
        )
    if kind == "ModelReply":
        px = draw(images(0, 3))
        rates = np.array(draw(st.lists(st.floats(width=32), min_size=6, max_size=6)), np.float32).reshape(1, 2, 3)
        return m.ModelReply(
            request_id=draw(uint63),
            op=draw(st.sampled_from(m.MODEL_OPS)),
            model_version=draw(st.integers(-1, m.INT64_MAX)),
            trial_id=draw(st.integers(-1, m.INT64_MAX)),
            image_hashes=[image_hash(p) for p in px],
            reasons=[draw(texts) for _ in px],
            info={"evidence": {"log_likelihood": draw(st.floats())}},
            pixels=px,
            rates=rates,
        )
    return m.Shutdown(reason=draw(texts))


# -- models -----------------------------------------------------------------------------------------------------------
def quadrant_data(n: int = 200, n_neurons: int = 3, seed: int = 0):
    """(16x16 images, counts in 0.2 s, true rates): neurons driven by the brightness of one image quadrant
    (quadrants vary independently)."""
    rng = np.random.default_rng(seed)
    levels = rng.random((n, 2, 2))
    x = np.kron(levels, np.ones((8, 8)))[..., None] + rng.normal(0, 0.1, (n, 16, 16, 3))
    imgs = np.clip(np.rint(255 * x), 0, 255).astype(np.uint8)
    quads = np.stack([levels[:, 0, 0], levels[:, 1, 1], levels[:, 0, 1]], 1)
    rates = 5.0 + 60.0 * quads[:, :n_neurons]
    counts = rng.poisson(rates * 0.2).astype(np.float32)
    return imgs, counts, rates


def small_compress_session(n_neurons: int, n_shown: int, compression: dict | None = None, **model):
    """A 16x16 rig with `model` and `compression` keys and what a session of it recorded: (rig, images shown,
    counts in 0.15 s), counts drawn from the virtual cortex's true rates."""
    from acquisition.population import Population
    from controller.config import RigConfig, with_overrides
    from stimulus.pools import make_pools

    rig = with_overrides(
        RigConfig(),
        images={"size_px": 16, "pool_size": 200, "test_size": 50},
        model=model,
        compression=compression or {},
    )
    pop_cfg = rig.cortex.population.model_copy(update={"n_neurons": n_neurons})
    rig = rig.model_copy(update={"cortex": rig.cortex.model_copy(update={"population": pop_cfg})})
    pools = make_pools(rig.images)
    rng = np.random.default_rng(0)
    imgs = pools.train[rng.integers(0, 200, n_shown)]
    counts = rng.poisson(Population(pop_cfg, 16, True).rates(imgs) * 0.15).astype(np.float32)
    return rig, imgs, counts


def free_port() -> int:
    """A TCP port free on every interface now, drawn from 20000-31999: below the range the system hands out to
    outgoing connections (32768 and up) and above the one Ray's workers take (10002-19999), so that no other test's
    connection takes it before the test binds it."""
    import random
    import socket

    for port in random.sample(range(20000, 32000), 500):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-31999")
