"""One engine over injected parts: in process and across processes alike, its rules, and its bugs fixed."""

import json
import sqlite3

import numpy as np
import pytest

from contract import messages as m
from contract.parts import InProcessPart, PartError
from controller.engine import SessionEngine, SessionParts
from controller.session import run_controller, run_in_process
from controller.worlds import in_process_parts
from stimulus.pools import make_pools
from tests.helpers import SilentModel, small_rig, wait_idle


def _stored(path):
    db = sqlite3.connect(path / "session.sqlite")
    responses = db.execute(
        "SELECT trial_id, idx, image_hash, counts, valid, model_version, source, reason "
        "FROM responses ORDER BY trial_id, idx"
    ).fetchall()
    plans = db.execute(
        "SELECT trial_id, image_hashes, reasons, model_version, source FROM plans ORDER BY trial_id"
    ).fetchall()
    versions = db.execute("SELECT version FROM model_versions ORDER BY version").fetchall()
    return responses, plans, versions


def test_the_same_session_in_process_and_across_processes_records_the_same(recorded, tmp_path):
    """The recorded session (cortexloop run: every part its own process) run again with every part in this
    process: the same records. So a run at max speed is reproducible: nothing of the wall clock or of how the
    processes are scheduled reaches what is stored."""
    rig, path, procs = recorded
    inproc, _ = run_in_process(rig, tmp_path / "inproc")
    assert inproc["engine_mode"] == "in-process" and procs["engine_mode"] == "processes"
    assert inproc["status"] == procs["status"] == "completed"
    a, b = _stored(tmp_path / "inproc"), _stored(path)
    assert len(a[0]) == rig.session.n_trials * rig.trial.images_per_trial
    assert a[0] == b[0]  # responses: counts, validity, model version, reason
    assert a[1] == b[1]  # plans, requeues included (this rig breaks fixation)
    assert a[2] == b[2]  # model versions
    assert inproc["trials_aborted"] == procs["trials_aborted"] > 0
    assert inproc["spikes_received"] == procs["spikes_received"]


def batch(seq, t0, t1, total, n=3, neuron=None):
    neuron = np.zeros(n, np.uint16) if neuron is None else neuron
    return m.SpikeBatch(
        stream="s",
        seq=seq,
        t_start_s=t0,
        t_end_s=t1,
        total_spikes=total,
        neuron=neuron,
        time_s=np.linspace(t0, t1, len(neuron), endpoint=False),
    )


def test_a_lost_packet_marks_the_interval_it_covered_even_after_a_heartbeat(engine):
    engine._on_acquisition(batch(1, 0.0, 1.0, 3))
    # The heartbeat runs past the lost batch 2 (it says batch 2 was made): it completes no window.
    before = engine.record.clock_s
    engine._on_acquisition(m.Heartbeat(role="cortex", seq=1, clock_s=30.0, stream="s", info={"batch_seq": 2}))
    assert engine.record.clock_s == before < 30.0
    engine._on_acquisition(batch(3, 2.0, 3.0, 9))
    st = engine.streams["s"]
    assert st.lost_intervals == [(1.0, 2.0)]
    assert st.lost_batches == 1 and st.lost_spikes == 3
    # Once every batch it names has arrived, a heartbeat moves the stream's clock on (a quiet stream completes).
    engine._on_acquisition(m.Heartbeat(role="cortex", seq=2, clock_s=40.0, stream="s", info={"batch_seq": 3}))
    assert engine.record.clock_s == 40.0


def test_onset_codes_without_labels_are_paired_in_order_and_a_lost_one_shifts_nothing():
    from controller.protocol import OnsetLabeller

    lab = OnsetLabeller(tolerance_s=0.08)
    flips = [((0, i), 1.0 + 0.2 * i) for i in range(5)] + [((1, i), 3.0 + 0.2 * i) for i in range(3)]
    for key, t in flips:
        lab.add_flip(key, t)
    offset = 12.5
    codes = [t + offset + 0.001 * k for k, (key, t) in enumerate(flips) if key != (0, 2)]  # the third code is lost
    codes.insert(5, codes[4] + 0.05)  # and an extra one comes between two onsets
    labels = {}
    for c in codes:
        lab.add_code(c)
        labels.update(lab.pair())
    assert (0, 2) not in labels and lab.unmatched == {(0, 2)} and lab.extra_codes == 1
    for key, t in flips:
        if key != (0, 2):
            assert labels[key] == pytest.approx(t + offset, abs=0.01)


def test_a_sequence_number_going_backwards_is_counted_not_subtracted(engine):
    engine._on_acquisition(batch(5, 0.0, 1.0, 3))
    engine._on_acquisition(batch(6, 1.0, 2.0, 6))
    # Batch 2 was never received: a late batch from before the first one received. Its spikes are real and
    # nothing was counted lost for them, so it is stored and binned (until the reordering fix it was dropped,
    # and the store held 2 batches).
    engine._on_acquisition(batch(2, 2.0, 3.0, 9))
    engine._on_acquisition(batch(6, 1.0, 2.0, 6))  # a true repeat: stored and binned once
    st = engine.streams["s"]
    assert st.lost_batches == 0 and st.lost_spikes == 0 and st.out_of_order_batches == 2
    assert st.received_spikes == 9 and st.last_seq == 6
    assert engine.store.count("spike_batches") == 3
    assert engine.record.counts(np.array([1.0]), np.array([2.0]))[0, 0] == 3  # batch 6's spikes counted once


def test_a_reordered_batch_is_stored_binned_and_no_longer_lost(engine):
    engine._on_acquisition(batch(1, 0.0, 1.0, 3))
    engine._on_acquisition(batch(3, 2.0, 3.0, 9))  # batch 2 comes after it
    st = engine.streams["s"]
    assert st.lost_intervals == [(1.0, 2.0)] and st.lost_batches == 1 and st.lost_spikes == 3
    engine._on_acquisition(batch(2, 1.0, 2.0, 6))
    assert st.lost_intervals == [] and st.lost_batches == 0 and st.lost_spikes == 0 and st.out_of_order_batches == 1
    assert engine.store.count("spike_batches") == 3 and st.last_seq == 3
    assert engine.record.counts(np.array([1.0]), np.array([2.0]))[0, 0] == 3
    engine._on_acquisition(batch(2, 1.0, 2.0, 6))  # the same batch again: not stored or binned twice
    assert engine.store.count("spike_batches") == 3 and st.out_of_order_batches == 2
    assert engine.record.counts(np.array([1.0]), np.array([2.0]))[0, 0] == 3


def test_a_late_batch_leaves_the_rest_of_its_gap_lost(engine):
    engine._on_acquisition(batch(1, 0.0, 1.0, 3))
    engine._on_acquisition(batch(5, 4.0, 5.0, 15))  # 2, 3 and 4 missing: 9 spikes
    st = engine.streams["s"]
    assert st.lost_intervals == [(1.0, 4.0)] and st.lost_batches == 3 and st.lost_spikes == 9
    engine._on_acquisition(batch(3, 2.0, 3.0, 9))
    assert sorted(st.lost_intervals) == [(1.0, 2.0), (3.0, 4.0)]
    assert st.lost_batches == 2 and st.lost_spikes == 6 and st.missing_seqs == [(2, 2), (4, 4)]
    starts, ends = np.array([1.2, 2.1, 3.5]), np.array([1.8, 2.9, 3.9])
    from controller.protocol import windows_valid

    assert windows_valid(starts, ends, st.lost_intervals, np.ones(3, bool)).tolist() == [False, True, False]


def test_a_spike_batch_whose_lengths_disagree_is_dropped_and_counted(engine):
    bad = m.SpikeBatch(
        stream="s", seq=1, t_start_s=0.0, t_end_s=1.0, total_spikes=3, neuron=np.zeros(3, np.uint16), time_s=np.zeros(2)
    )
    engine._on_acquisition(bad)
    engine._on_acquisition(batch(1, 0.0, 1.0, 3, neuron=np.array([0, 99, 1], np.uint16)))  # no neuron 99
    assert engine.bad_batches == 2 and engine.store.count("spike_batches") == 0
    engine._on_acquisition(batch(1, 0.0, 1.0, 3))
    assert engine.streams["s"].received_spikes == 3
    assert engine.record.counts(np.array([0.0]), np.array([1.0]))[0, 0] == 3


class SilentSource(InProcessPart):
    """Describes its stream, then never sends anything."""

    def describe(self, timeout_s):
        return {"n_neurons": 8}

    def poll(self, timeout_s):
        return []


def test_a_silent_acquisition_source_ends_the_session_with_a_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(SessionEngine, "DEAD_AFTER_S", 1.0)
    rig = small_rig(n_trials=3)
    parts = in_process_parts(rig)
    parts.source = SilentSource()
    summary = run_controller(rig, tmp_path / "silent", parts, quiet=True)
    assert summary["status"].startswith("aborted: acquisition silent")
    written = json.loads((tmp_path / "silent" / "summary.json").read_text())
    assert written["status"] == summary["status"] and written["spikes_received"] == 0


def test_a_part_without_a_method_of_its_role_is_refused_by_name():
    rig = small_rig()
    parts = in_process_parts(rig)

    class NoPoll:
        def submit(self, plan):
            pass

    with pytest.raises(PartError, match=r"presenter: NoPoll is not a Presenter: it has no close, malformed, poll"):
        SessionParts(parts.clock, parts.source, NoPoll(), parts.model, "in-process").check()


def test_photodiode_edges_become_the_onsets_and_their_latency_is_reported(tmp_path):
    from acquisition.virtual_cortex import VirtualCortex

    lag = 0.012

    class CortexWithPhotodiode(VirtualCortex):
        """Records a photodiode edge `lag` after each onset code; one onset's edge never comes."""

        def on_event(self, ev):
            super().on_event(ev)
            if ev.code == m.Codes.IMAGE_ONSET and not (ev.trial_id == 1 and ev.index == 2):
                code_t = self.outbox[-1].time_s
                self.outbox.append(
                    m.EventCode(
                        stream="virtual-cortex",
                        seq=0,
                        code=m.Codes.PHOTODIODE,
                        time_s=code_t + lag,
                        clock="acquisition",
                    )
                )

    rig = small_rig(n_trials=3)
    from controller.config import with_overrides

    rig = with_overrides(rig, fixation={"break_probability": 0.0})
    parts = in_process_parts(rig)
    parts.source = CortexWithPhotodiode(rig, parts.source.clock)
    parts.presenter.events.cortex = parts.source
    summary = run_controller(rig, tmp_path / "pd", parts, quiet=True)
    pd = summary["photodiode"]
    assert pd["onsets_with_edge"] == 3 * rig.trial.images_per_trial - 1 and pd["onsets_without_edge"] == 1
    assert pd["latency_ms_median"] == pytest.approx(lag * 1000, abs=1e-6)
    db = sqlite3.connect(tmp_path / "pd" / "session.sqlite")
    codes = dict(
        ((t, i), x)
        for t, i, x in db.execute("SELECT trial_id, idx, time_s FROM event_codes WHERE clock='acquisition' AND code=20")
    )
    for t, i, onset in db.execute("SELECT trial_id, idx, onset_acq_s FROM responses"):
        expected = codes[(t, i)] + (0.0 if (t, i) == (1, 2) else lag)
        assert onset == pytest.approx(expected, abs=1e-9)


def test_the_rig_files_serial_event_output_writes_every_code_of_a_trial_followed_by_zero():

    from controller.clocks import VirtualClock
    from controller.config import with_overrides
    from stimulus.fixation import AlwaysFixating
    from stimulus.presenter_part import PresenterRunner
    from stimulus.presenters import HeadlessPresenter
    from transport.processes.presenter import make_rig_event_output

    rig = with_overrides(small_rig(), event_output={"kind": "serial", "serial_url": "loop://"})
    screen = HeadlessPresenter(60.0, VirtualClock())
    out = make_rig_event_output(rig, {}, screen, None)
    runner = PresenterRunner(screen, AlwaysFixating(), out, screen.clock)
    pools = make_pools(rig.images)
    from contract.images import image_hash

    px = pools.train[:3]
    runner.submit(
        m.TrialPlan(
            trial_id=4,
            image_hashes=[image_hash(p) for p in px],
            model_version=0,
            source="model",
            reasons=["a", "b", "c"],
            pixels=px,
            **rig.timing.plan_fields(),
        )
    )
    reports = runner.poll(0)
    assert [r.status for r in reports if isinstance(r, m.TrialReport)] == ["started", "done"]
    wait_idle(out)  # every word out and the line back at rest
    got = list(out.port.read(out.port.in_waiting))
    out.close()
    # The line at rest, then start, three onsets (the same code three times: each survives) and the end.
    assert got == [0, 10, 0, 20, 0, 20, 0, 20, 0, 30, 0]


def test_a_late_plan_shows_what_a_random_slot_would_not_the_whole_pool(tmp_path):
    from controller.config import with_overrides

    rig = with_overrides(
        small_rig(n_trials=4),
        trial={"virtual_plan_timeout_s": 0.2},
        images={"gaudy_share": 0.5},
        fixation={"break_probability": 0.0},
    )
    parts = in_process_parts(rig)
    parts.model = SilentModel()
    run_controller(rig, tmp_path / "s", parts, quiet=True)
    kinds = make_pools(rig.images).train_kind
    _, plans, _ = _stored(tmp_path / "s")
    shown = [int(why.split("#")[1]) for plan in plans for why in json.loads(plan[2])]
    assert len(shown) == 4 * rig.trial.images_per_trial and all(plan[4] == "pool" for plan in plans)
    # Half the pool is gaudy: 20 draws from the whole pool would hold about 10 of them.
    assert all(kinds[i] == "natural" for i in shown), [kinds[i] for i in shown]
