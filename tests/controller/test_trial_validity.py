"""A response is kept valid only if the recording covered its window and the screen showed its image as planned:
the rules (controller/protocol.py), then whole sessions with a stalled recording system or a stalled screen."""

from __future__ import annotations

import io
import json
import sqlite3
import time
import uuid

import numpy as np
import pytest

from contract import messages as m
from controller import protocol as p
from controller.config import with_overrides
from controller.status import StatusBoard
from records.summary import format_table
from stimulus.presenters.headless import HeadlessPresenter
from tests.helpers import openephys_rig, small_rig

# -- the rules ----------------------------------------------------------------------------------------------


def test_a_stretch_without_spikes_longer_than_the_limit_is_a_silence():
    got, live = p.stream_silences(-np.inf, np.array([1.0, 1.1, 1.3]), 0.5)
    assert got == [] and live == 1.3  # the stream's start is no silence
    got, live = p.stream_silences(1.3, np.array([1.5, 3.0, 3.2, 5.0]), 0.5)
    assert got == [(1.5, 3.0), (3.2, 5.0)] and live == 5.0
    got, live = p.stream_silences(5.0, np.array([2.0, 4.9]), 0.5)  # late stamps change nothing
    assert got == [] and live == 5.0


def test_a_window_waits_for_a_spike_after_it_not_for_an_estimated_clock():
    # The estimated clock passed the window's end, but the last spike is before it: not yet.
    assert not p.window_covered(2.0, clock_s=2.3, live_s=1.9, max_silence_s=1.0)
    assert p.window_covered(2.0, clock_s=2.3, live_s=2.05, max_silence_s=1.0)
    # A silence longer than the limit is going on: collected now (and invalid), not waited for.
    assert p.window_covered(2.0, clock_s=3.0, live_s=1.9, max_silence_s=1.0)
    assert p.open_silence(1.9, 3.0, 1.0) == (1.9, 3.0) and p.open_silence(1.9, 2.5, 1.0) is None
    # A source whose clock is its own (the virtual cortex): the clock is proof.
    assert p.window_covered(2.0, clock_s=2.0, live_s=-np.inf, max_silence_s=None)
    assert not p.window_covered(2.0, clock_s=1.99, live_s=5.0, max_silence_s=None)


def test_which_streams_only_spikes_prove_live():
    assert p.stream_proof({"kind": "lsl"}) == "spikes" and p.stream_proof({"kind": "open ephys"}) == "events"
    assert p.stream_proof({"kind": "virtual cortex"}) == p.stream_proof({}) == "clock"
    assert p.stream_proof({"kind": "stored session", "proof": "spikes"}) == "spikes"


def test_an_image_held_or_blanked_off_plan_is_named():
    hz, fix, on, off = 60.0, 3, 6, 6
    n_frames = fix + 3 * (on + off) + 2
    iv = np.full(n_frames - 1, 1 / hz)
    assert p.presentation_faults(iv, 3, fix, on, off, hz, 2) == [None, None, None]
    stalled = iv.copy()
    stalled[fix + (on + off) + 2] += 3.0  # image 1 stays on 3 s longer (a stalled presenter)
    stalled[fix + 2 * (on + off) + on] += 3 / hz  # the blank after image 2 three frames long: beyond 2
    faults = p.presentation_faults(stalled, 3, fix, on, off, hz, 2)
    assert faults[0] is None
    assert faults[1] == "presentation: shown 186 frames, planned 6"
    assert faults[2] == "presentation: blank after it 9 frames, planned 6"
    # Within the tolerance (two dropped frames), or a fault in the fixation period: shown as planned.
    ok = iv.copy()
    ok[fix + 1] += 2 / hz
    ok[0] += 1.0
    assert p.presentation_faults(ok, 3, fix, on, off, hz, 2) == [None, None, None]
    # Shorter than planned is off plan too.
    fast = iv.copy()
    fast[fix : fix + on] = 0.2 / hz
    assert p.presentation_faults(fast, 1, fix, on, off, hz, 2) == ["presentation: shown 1 frames, planned 6"]


def test_a_done_trials_faulted_images_go_first_into_the_next_plan():
    gen = p.trial_protocol(n_trials=3, queue_depth=1, images_per_trial=3)
    cmd, presented = gen.send(None), {}
    try:
        while True:
            result = None
            if isinstance(cmd, p.TakeImages):
                result = p.Offer([(f"t{cmd.trial_id}i{k}", None, "model") for k in range(cmd.n)], "model", 0)
            elif isinstance(cmd, p.Present):
                presented[cmd.trial_id] = [(h, why) for h, _, why in cmd.items]
            elif isinstance(cmd, p.AwaitTrial):
                result = type("R", (), {"status": "done"})()
            elif isinstance(cmd, p.CollectResponses):
                faults = {0: [None, "presentation: shown 186 frames, planned 6", None]}.get(cmd.trial_id, [None] * 3)
                result = [
                    {"trial_id": cmd.trial_id, "idx": i, "valid": f is None, "fault": f} for i, f in enumerate(faults)
                ]
            cmd = gen.send(result)
    except StopIteration as stop:
        assert stop.value == p.Finish(completed=3, aborted=0)
    assert [h for h, _ in presented[1]] == ["t0i1", "t1i0", "t1i1"]
    assert presented[1][0][1] == "requeued from trial 0 (presentation: shown 186 frames, planned 6): model"
    assert [h for h, _ in presented[2]] == ["t2i0", "t2i1", "t2i2"]


def test_images_waiting_to_be_shown_again_at_the_end_get_one_trial_more():
    # Two plans queued ahead: trial 2's fault (collected while trial 3, the last, is at the presenter) would
    # otherwise end the session with its image never shown again.
    gen = p.trial_protocol(n_trials=4, queue_depth=2, images_per_trial=2)
    cmd, presented, collected = gen.send(None), {}, []
    try:
        while True:
            result = None
            if isinstance(cmd, p.TakeImages):
                result = p.Offer([(f"t{cmd.trial_id}i{k}", None, "model") for k in range(cmd.n)], "model", 0)
            elif isinstance(cmd, p.Present):
                presented[cmd.trial_id] = [h for h, _, _ in cmd.items]
            elif isinstance(cmd, p.AwaitTrial):
                result = type("R", (), {"status": "done"})()
            elif isinstance(cmd, p.CollectResponses):
                collected.append(cmd.trial_id)
                faults = [None, "stream silent over the window"] if cmd.trial_id == 2 else [None, None]
                result = [
                    {"trial_id": cmd.trial_id, "idx": i, "valid": f is None, "fault": f} for i, f in enumerate(faults)
                ]
            cmd = gen.send(result)
    except StopIteration as stop:
        assert stop.value == p.Finish(completed=5, aborted=0)
    assert collected == [0, 1, 2, 3, 4] and presented[4] == ["t2i1", "t4i0"]


# -- sessions -----------------------------------------------------------------------------------------------


class StallingScreen(HeadlessPresenter):
    """The headless screen on the session's clock, whose presenter stops for `stall_s` once, at frame `at`
    (a process stopped and continued): the frame on screen then stays up that long."""

    def __init__(self, refresh_hz, clock, at: int, stall_s: float):
        super().__init__(refresh_hz, clock)
        self.at, self.stall_s = at, stall_s

    def _flip(self) -> float:
        if self._frame + 1 == self.at:
            self.clock.sleep_until(self.clock.now() + self.stall_s)
        return super()._flip()


def responses(db) -> list[tuple]:
    return sqlite3.connect(db).execute("SELECT trial_id, idx, image_hash, valid FROM responses").fetchall()


def log_of(db, kind: str) -> list[str]:
    return [r[0] for r in sqlite3.connect(db).execute("SELECT text FROM log WHERE kind = ?", (kind,))]


def test_a_presenter_stalled_mid_trial_stores_the_image_invalid_and_shows_it_again(tmp_path):
    from controller.clocks import make_clock
    from controller.session import rig_truth, run_controller
    from controller.worlds import in_process_parts
    from stimulus.pools import make_pools

    rig = small_rig(n_trials=4)
    rig = with_overrides(rig, fixation={"break_probability": 0.0})
    t = rig.timing
    # Frame 1 of the session is trial 0's first; trial 1's image 2 is on screen from this frame on.
    trial_frames = t.fixation_frames + t.images_per_trial * (t.on_frames + t.off_frames) + t.iti_frames
    at = trial_frames + t.fixation_frames + 2 * (t.on_frames + t.off_frames) + 3
    clock = make_clock(rig.session.speed)
    pools = make_pools(rig.images)
    parts = in_process_parts(rig, pools=pools, screen=StallingScreen(rig.display.refresh_hz, clock, at, 3.0))
    board = StatusBoard(rig.session.n_trials, stream=io.StringIO(), every_s=0.0)
    summary = run_controller(rig, tmp_path / "s", parts, truth=rig_truth(rig), pools=pools, board=board)
    db = tmp_path / "s" / "session.sqlite"
    assert summary["status"] == "completed" and summary["trials_done"] == 4
    rows = responses(db)
    invalid = [(tid, idx) for tid, idx, _, ok in rows if not ok]
    assert invalid == [(1, 2)]  # only the image on screen while the presenter stood still
    assert summary["responses_misshown"] == 1
    assert "responses invalid                    1 (stream silent over the window 0, image not shown as planned 1)" in (
        format_table(summary)
    )
    # The live status said so at once, naming the trial and image (plain lines: the output is not a terminal).
    assert (
        "WARNING: an image was not shown as planned (trial 1 image 2: presentation: shown " in board.stream.getvalue()
    )
    (line,) = log_of(db, "presentation_fault")
    shown = int(line.split("shown ")[1].split(" frames")[0])  # 3 s more at 60 Hz: about 180 frames more
    assert line.startswith("trial 1 image 2: presentation: shown ") and 170 < shown - t.on_frames <= 181
    assert line.endswith(f"planned {t.on_frames}; response invalid, image requeued")
    stalled_hash = next(h for tid, idx, h, _ in rows if (tid, idx) == (1, 2))
    shown_again = [(tid, idx) for tid, idx, h, ok in rows if h == stalled_hash and ok]
    # First in the next plan taken (trial 2's was at the presenter already: two plans are queued ahead), and
    # valid there; the plan says why it is shown again.
    assert shown_again == [(3, 0)]
    (reasons,) = sqlite3.connect(db).execute("SELECT reasons FROM plans WHERE trial_id = 3").fetchone()
    assert json.loads(reasons)[0].startswith("requeued from trial 1 (presentation: shown ")


def stall_rig(source: str):
    """The small rig whose recording system stalls for 2 s after 5 s of its clock (publishing nothing, then going
    on), heard only through Open Ephys or LSL: sources whose stream says nothing while it stalls. On the virtual
    clock the recording system's time moves only with the presenter's codes, and the presenter shows at most
    one trial beyond the one being collected, so the stall (in trial 3) ends before trial 4 does (at 8 s).
    """
    rig = with_overrides(
        small_rig(n_trials=6),
        fixation={"break_probability": 0.0},
        rehearsal={"stall_after_s": 5.0, "stall_s": 2.0},
    )
    if source == "openephys":
        return openephys_rig(rig)
    tag = uuid.uuid4().hex[:8]  # streams of their own: another test's outlets are never resolved
    lsl = {"spike_stream": f"test-spikes-{tag}", "code_stream": f"test-codes-{tag}", "virtual_cortex": True}
    return with_overrides(
        rig,
        cortex={"source": "lsl", "lsl": {**lsl, "n_neurons": rig.cortex.population.n_neurons}},
        endpoints={"acquisition_pub": "off", "openephys_pub": "off"},
    )


def longest_silence(db, codes: bool) -> tuple[float, float]:
    """The longest stretch between two spikes the store holds (with codes: between two spikes or recorded event
    codes), on the acquisition clock."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT time_s FROM spike_batches").fetchall()
    t = [np.frombuffer(r[0], np.float64) for r in rows]
    if codes:
        t.append(np.array([r[0] for r in conn.execute("SELECT time_s FROM event_codes WHERE clock = 'acquisition'")]))
    t = np.sort(np.concatenate(t))
    k = int(np.argmax(np.diff(t)))
    return float(t[k]), float(t[k + 1])


@pytest.mark.parametrize("source", ["openephys", "lsl"])
def test_a_stalled_recording_system_yields_invalid_responses_not_valid_zeros(tmp_path, source, request):
    if source == "lsl":
        pytest.importorskip("pylsl")
        request.getfixturevalue("lsl_on_this_machine")  # tests/conftest.py
    from transport.launch import run_session

    summary = run_session(stall_rig(source), tmp_path / "s")
    db = tmp_path / "s" / "session.sqlite"
    assert summary["status"] == "completed" and summary["trials_done"] >= 6  # one more for images still to show
    # What proves the stream live: spikes; for Open Ephys its TTL words too (the same stream's samples).
    a, b = longest_silence(db, codes=source == "openephys")
    assert b - a > 1.5  # the stall: no spike for about 2 s
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT trial_id, idx, image_hash, window_start_s, window_end_s, valid FROM responses"
    ).fetchall()
    over = [r for r in rows if r[3] < b and a < r[4]]
    assert over and not any(r[5] for r in over)  # every window the stall covers is invalid
    assert summary["responses_stream_silent"] == len(over) == len(log_of(db, "window_uncovered"))
    assert any(
        line.startswith("stream ") and f"from {a:.3f} to {b:.3f} s" in line for line in log_of(db, "stream_silent")
    )
    # Their images are shown again, later in the session, each saying why.
    reasons = [r for (js,) in conn.execute("SELECT reasons FROM plans") for r in json.loads(js)]
    assert sum("(stream silent over the window)" in r for r in reasons) >= min(len(over), 1)


def follow(src, seconds: float, live_s: float, silences: list, max_silence_s: float, clock_s: float = -np.inf):
    """Poll a real source for `seconds` (wall), as the engine does: spike stamps (and, for Open Ephys, code
    stamps) are proof, heartbeats move the estimated clock. Returns (live_s, clock_s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for msg in src.poll(0.02):
            if isinstance(msg, m.SpikeBatch):
                found, live_s = p.stream_silences(live_s, msg.time_s, max_silence_s)
                silences += found
                clock_s = max(clock_s, msg.t_end_s)
            elif isinstance(msg, m.Heartbeat) and msg.stream:
                clock_s = max(clock_s, msg.clock_s)
    return live_s, clock_s


def test_an_lsl_outlet_that_stops_pushing_but_stays_up_proves_nothing(request):
    pytest.importorskip("pylsl")
    request.getfixturevalue("lsl_on_this_machine")  # tests/conftest.py
    import pylsl

    from acquisition.lsl_source import LslAcquisitionSource, LslCodeOutlet, LslSpikeOutlet

    tag = uuid.uuid4().hex[:8]
    spikes, codes = LslSpikeOutlet(f"test-spikes-{tag}", n_units=2), LslCodeOutlet(f"test-codes-{tag}")
    src = LslAcquisitionSource(spikes.name, codes.name, n_neurons=2, margin_ms=50.0, stale_after_s=5.0)
    try:
        src.describe(10.0)
        assert spikes.wait_for_consumers(5.0)
        live, clock, silences = -np.inf, -np.inf, []
        for _ in range(10):  # a live stream: a spike every 20 ms
            spikes.push([0], [pylsl.local_clock()])
            live, clock = follow(src, 0.02, live, silences, 1.0, clock)
        stopped_at = live
        # The outlet stays up and pushes nothing; a window starts 0.2 s later and ends 0.35 s later.
        window = (stopped_at + 0.2, stopped_at + 0.35)
        live, clock = follow(src, 1.6, live, silences, 1.0, clock)
        assert live == stopped_at and silences == []
        # The source's heartbeats ran its clock past the window (on them alone, as before, the window was
        # complete and, with no lost batch, valid: zero spikes)...
        assert clock > window[1]
        # ... but only a spike proves the stream live: the window is collected because a stall is going on, and
        # that stall overlaps it.
        stall = p.open_silence(live, clock, 1.0)
        assert stall is not None and p.window_covered(window[1], clock, live, 1.0)
        assert p.overlapping(np.array([window[0]]), np.array([window[1]]), [stall]).tolist() == [True]
        # The stream goes on: the stall is closed by the next spike, and stays one.
        spikes.push([1], [pylsl.local_clock()])
        live, clock = follow(src, 0.5, live, silences, 1.0, clock)
        assert len(silences) == 1 and silences[0][0] == stopped_at and silences[0][1] > window[1]
    finally:
        src.close()
        spikes.close()
        codes.close()


def test_an_open_ephys_broadcaster_that_goes_quiet_proves_nothing():
    import zmq

    from acquisition.config import OpenEphysConfig, TtlConfig
    from acquisition.openephys import encode_spikes
    from acquisition.openephys_source import OpenEphysSource
    from controller.clocks import WallClock

    rate = 30000.0
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    clock = WallClock()
    cfg = OpenEphysConfig(units=[[1, 1]], clock_margin_ms=20.0, stale_after_s=2.0)
    src = OpenEphysSource(cfg, TtlConfig(), pub.getsockopt_string(zmq.LAST_ENDPOINT), rate, clock)
    try:
        assert src.describe(5.0)["n_neurons"] == 1
        t0 = clock.now()
        live, now, silences = -np.inf, -np.inf, []
        for _ in range(10):  # spikes stamped on the GUI's sample clock, here the wall clock from t0
            for frames in encode_spikes(np.array([0]), np.array([clock.now() - t0 + 1.0]), rate):
                pub.send_multipart(frames)
            live, now = follow(src, 0.02, live, silences, 1.0, now)
        stopped_at = live
        window = (stopped_at + 0.2, stopped_at + 0.35)
        live, now = follow(src, 1.5, live, silences, 1.0, now)  # the broadcaster stays up, quiet
        assert live == stopped_at and now > window[1]  # the heartbeats alone would complete the window
        stall = p.open_silence(live, now, 1.0)
        assert stall is not None and p.overlapping(np.array([window[0]]), np.array([window[1]]), [stall]).tolist() == [
            True
        ]
    finally:
        src.close()
        pub.close(0)
