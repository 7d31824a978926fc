"""Sessions on an LSL rig whose spike stream is an outlet made with pylsl (a recording bridge pushing spikes on the
wall clock) and whose code stream is either the presenter's own marker outlet (the one-machine wiring) or a stream
that carries no codes (a bridge that records nothing). The engine, presenter and LSL source run in this process on
the wall clock; the model never answers (pool images), which is all these sessions need."""

from __future__ import annotations

import gc
import json
import sqlite3
import threading
import uuid

import numpy as np
import pytest

from contract import messages as m
from controller.clocks import make_clock
from controller.config import with_overrides
from controller.engine import SessionParts
from controller.session import run_controller
from controller.worlds import acquisition_part
from records.resume import resume_epoch
from stimulus.event_outputs import LslEventOutput
from stimulus.fixation import make_fixation
from stimulus.presenter_part import PresenterRunner
from stimulus.presenters import make_presenter
from tests.helpers import SilentModel, small_rig

pylsl = pytest.importorskip("pylsl")
pytestmark = pytest.mark.usefixtures("lsl_on_this_machine")  # tests/conftest.py

N_NEURONS = 4


class Bridge:
    """A recording system's LSL bridge: a spike stream made with pylsl, pushing spikes of N_NEURONS units at about
    100 Hz each, stamped with pylsl.local_clock(), from a thread (started on entering, stopped on leaving)."""

    def __init__(self, name: str):
        info = pylsl.StreamInfo(name, "Spikes", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, name)
        self.outlet = pylsl.StreamOutlet(info)
        self.stop = threading.Event()
        self.pushed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self.stop.wait(0.01):
            n = rng.poisson(N_NEURONS * 100 * 0.01)
            now = pylsl.local_clock()
            units = rng.integers(0, N_NEURONS, n).astype(np.int32).reshape(-1, 1)
            times = np.sort(now - 0.01 * rng.random(n)).tolist()
            if n:
                self.outlet.push_chunk(units, times)
                self.pushed += n

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5.0)


def lsl_rig(n_trials: int, spike_stream: str, code_stream: str):
    return with_overrides(
        small_rig(n_trials=n_trials, speed="realtime"),
        fixation={"break_probability": 0.0},
        # Frames a busy machine drops are not what these tests are about: an image shown off plan is not shown again.
        trial={"max_frame_error": 10_000},
        cortex={
            "source": "lsl",
            "lsl": {
                "spike_stream": spike_stream,
                "code_stream": code_stream,
                "n_neurons": N_NEURONS,
                "clock_margin_ms": 50.0,
            },
        },
        endpoints={"acquisition_pub": "off", "openephys_pub": "off"},
    )


def parts(rig, marker_stream: str, epoch: int = 0) -> tuple[SessionParts, LslEventOutput]:
    """The session's parts in this process: the rig's LSL source, a headless presenter whose codes go out as
    the LSL marker stream marker_stream (stamped at the flip), a model that never answers."""
    clock = make_clock(rig.session.speed)
    screen = make_presenter(rig.display, clock)
    events = LslEventOutput(marker_stream, presenter_now=screen.now)  # as transport/processes/presenter.py
    presenter = PresenterRunner(screen, make_fixation(rig.fixation, rig.display), events, clock)
    source = acquisition_part(rig, {}, epoch)
    return SessionParts(clock=clock, source=source, presenter=presenter, model=SilentModel(), mode="in-process"), events


def no_nan(path) -> dict:
    def refuse(name):
        raise AssertionError(f"{path}: {name} in the summary")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_code_stream_that_carries_no_codes_ends_the_session_with_the_reason(tmp_path):
    tag = uuid.uuid4().hex[:8]
    spikes, codes, presenter_codes = f"wiring-spikes-{tag}", f"wiring-codes-{tag}", f"wiring-presenter-{tag}"
    # The bridge's code stream is up but records nothing (the presenter's markers go to a stream nobody reads).
    silent = pylsl.StreamOutlet(pylsl.StreamInfo(codes, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, codes))
    rig = lsl_rig(3, spikes, codes)
    with Bridge(spikes):
        session_parts, _ = parts(rig, presenter_codes)
        summary = run_controller(rig, tmp_path / "s", session_parts, quiet=True)
    why = summary["status"]
    assert why.startswith(
        f"aborted: trial 0: the acquisition system recorded no image-onset code (code {m.Codes.IMAGE_ONSET}) in "
        f"this session (0 other event codes)"
    ), why
    assert f"streams {spikes}, {codes})" in why
    stored = no_nan(tmp_path / "s" / "summary.json")
    assert stored["status"] == summary["status"] and np.isfinite(stored["duration_s"])
    db = sqlite3.connect(tmp_path / "s" / "session.sqlite")
    rows = db.execute("SELECT trial_id, valid, onset_acq_s FROM responses").fetchall()
    assert rows and all(t == 0 and v == 0 and onset == 0.0 for t, v, onset in rows), "stored, invalid, no crash"
    assert db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()[0] == summary["status"]
    del silent


def test_the_presenters_own_marker_stream_as_code_stream_on_one_machine_then_resumed(tmp_path):
    """The one-machine wiring: the presenter's marker outlet is the source's code stream. Then the session is
    resumed: the resumed recording is a stream of its own, every batch of it binned, none taken for a repeat."""
    tag = uuid.uuid4().hex[:8]
    spikes, presenter_codes = f"wiring-spikes-{tag}", f"wiring-presenter-{tag}"
    path = tmp_path / "s"
    with Bridge(spikes) as bridge:
        rig = lsl_rig(2, spikes, presenter_codes)
        session_parts, events = parts(rig, presenter_codes)
        first = run_controller(rig, path, session_parts, quiet=True)
        assert first["status"] == "completed", first["status"]
        events.close()  # the first presenter's outlet goes, as its process would: a second one would be refused
        del session_parts, events
        gc.collect()
        rig = lsl_rig(4, spikes, presenter_codes)
        epoch = resume_epoch(path)
        assert epoch == 1
        session_parts, events = parts(rig, presenter_codes, epoch)
        resumed = run_controller(rig, path, session_parts, quiet=True, resume=True)
        assert bridge.pushed > 0
    assert resumed["status"] == "completed", resumed["status"]
    db = sqlite3.connect(path / "session.sqlite")
    logs = [t for k, t in db.execute("SELECT kind, text FROM log") if k in ("spikes_out_of_order", "spikes_lost")]
    assert logs == [], f"{len(logs)} batches taken for repeats or lost: {logs[:3]}"
    streams = dict(db.execute("SELECT stream, COUNT(*) FROM spike_batches GROUP BY stream").fetchall())
    assert set(streams) == {spikes, f"{spikes}-1"}
    rows = db.execute("SELECT trial_id, valid, counts FROM responses ORDER BY trial_id, idx").fetchall()
    per_trial = {}
    for tid, valid, counts in rows:
        per_trial.setdefault(tid, []).append((valid, np.frombuffer(counts, np.float32).sum()))
    assert sorted(per_trial) == [0, 1, 2, 3]
    for tid, got in per_trial.items():
        assert all(v for v, _ in got), f"trial {tid}: every onset code recorded, every window valid"
        assert sum(c for _, c in got) > 0, f"trial {tid}: spikes in its windows"
    onset_codes = db.execute(
        "SELECT COUNT(*) FROM event_codes WHERE clock = 'acquisition' AND code = ?", (m.Codes.IMAGE_ONSET,)
    ).fetchone()[0]
    assert onset_codes == len(rows)


def test_cortexloop_run_keeps_discovery_on_this_machine_for_a_one_machine_lsl_rig(tmp_path, monkeypatch):
    """`cortexloop run`'s launcher, with no LSLAPICFG of the lab's: every endpoint is on this machine, so every
    process it starts gets the session's lsl_api.cfg (ResolveScope = machine); the presenter's marker outlet (a
    process of its own) is the code stream, the spikes come from this process's pylsl outlet."""
    from transport.launch import run_session, session_roles

    tag = uuid.uuid4().hex[:8]
    spikes, presenter_codes = f"wiring-spikes-{tag}", f"wiring-presenter-{tag}"
    rig = with_overrides(
        lsl_rig(2, spikes, presenter_codes),
        event_output={"kind": "lsl", "lsl_stream_name": presenter_codes},
        endpoints={"acquisition_events": "off"},
    )
    assert session_roles(rig) == ("model", "presenter", "controller")
    monkeypatch.delenv("LSLAPICFG")  # this process read its own config already (tests/conftest.py)
    path = tmp_path / "s"
    with Bridge(spikes):
        summary = run_session(rig, path)
    assert summary["status"] == "completed", summary["status"]
    cfg = path / "lsl_api.cfg"
    assert "ResolveScope = machine" in cfg.read_text() and "IPv6 = disable" in cfg.read_text()
    assert summary["acquisition"]["lsl_api_cfg"] == str(cfg), "the controller process read the session's config"
    db = sqlite3.connect(path / "session.sqlite")
    rows = db.execute("SELECT valid, counts FROM responses").fetchall()
    assert len(rows) == 2 * rig.trial.images_per_trial and all(v for v, _ in rows)
    assert sum(np.frombuffer(c, np.float32).sum() for _, c in rows) > 0
