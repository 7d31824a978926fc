"""bench faults: the fault hooks of the virtual cortex, and the benchmark's figures on a real session."""

import sqlite3

import numpy as np
import pytest

from acquisition.virtual_cortex import VirtualCortex
from bench.faults import BY_NAME, fault_rig, format_table, run_fault, spike_accounting
from contract import messages as m
from controller.clocks import VirtualClock
from controller.config import with_overrides


def _cortex(**rehearsal):
    rig = fault_rig(BY_NAME["packets-reordered"], 5)
    rig = with_overrides(rig, rehearsal={**rig.rehearsal.model_dump(), **rehearsal})
    clock = VirtualClock(0.0)
    return VirtualCortex(rig, clock), clock


def _run(cortex, clock, steps: int = 200, step_s: float = 0.02) -> list:
    out = []
    for _ in range(steps):
        clock.sleep_until(clock.now() + step_s)
        out += [msg for msg in cortex.poll(0) if isinstance(msg, m.SpikeBatch)]
    return out


def test_reordered_batches_all_arrive_and_the_ledger_says_which(capsys):
    cortex, clock = _cortex(reorder=0.3, packet_loss=0.0)
    batches = _run(cortex, clock)
    seqs = [b.seq for b in batches]
    held = cortex.held.seq if cortex.held is not None else None
    # Nothing lost: every batch made is sent once (one may still be held back at the end), some out of order.
    assert sorted(seqs + ([held] if held else [])) == list(range(1, cortex.batcher.seq + 1))
    swapped = [b for a, b in zip(seqs, seqs[1:]) if a > b]  # b: the batch sent after a later one
    assert swapped, seqs
    ledger = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("ledger ")]
    delayed = {int(f[2]) for f in ledger if f[4] == "delayed"}
    assert delayed >= set(swapped) and len(ledger) == cortex.batcher.seq
    # The ledger's spike counts are the batches' own.
    sent = {b.seq: len(b.neuron) for b in batches}
    assert all(int(f[3]) == sent[int(f[2])] for f in ledger if int(f[2]) in sent)


def test_a_clock_jump_moves_the_stream_forward_once():
    cortex, clock = _cortex(clock_jump_s=2.0, clock_jump_after_s=1.0)
    batches = _run(cortex, clock, steps=100)  # 2 s of presenter time
    spans = np.array([b.t_end_s - b.t_start_s for b in batches])
    # One batch spans the jump (2 s and a step); the rest are a step long.
    assert (spans > 2.0).sum() == 1 and np.allclose(spans[spans < 1.0], 0.02, atol=1e-6)
    assert batches[-1].t_end_s - cortex.start_s > 2.0 + 1.9


def test_an_injected_drop_is_not_a_loss_and_a_real_loss_is(tmp_path):
    # A real session of processes at max speed, through the benchmark's own code.
    row = run_fault(BY_NAME["packets-dropped"], tmp_path, n_trials=5)
    assert row["recovered"], row
    s = row["spikes"]
    assert s["injected"] > 0 and s["injected_batches"] > 0 and s["lost"] == 0 and s["received"] > 0
    # The engine counted what the recording dropped; the benchmark does not call it a loss.
    assert row["engine_spikes_lost"] == s["injected"]
    assert "packets-dropped" in format_table([row])
    # Now lose a batch the cortex did send: the benchmark must count it, and only it.
    session = tmp_path / "packets-dropped"
    con = sqlite3.connect(session / "session.sqlite")
    rows = con.execute("SELECT seq, LENGTH(neuron) / 2 FROM spike_batches ORDER BY seq").fetchall()
    victim, n = [(q, k) for q, k in rows[1:-1] if k > 0][0]  # inside the stored range, with spikes
    con.execute("DELETE FROM spike_batches WHERE seq=?", (victim,))
    con.commit()
    con.close()
    again = spike_accounting(session)
    assert again["lost"] == n and again["lost_batches"] == 1
    assert again["injected"] == s["injected"] and again["received"] == s["received"] - n


def test_a_full_disk_ends_cleanly_says_what_to_do_and_resumes(tmp_path):
    # A real session of processes on a real small filesystem (a tmpfs: needs root). The launcher's terminal, the
    # stored reasons and the resume are the same for every fault that ends a session (a killed acquisition process:
    # tests/transport/test_stops.py); the disk is the one whose resume needs the space freed first.
    row = run_fault(BY_NAME["disk-full"], tmp_path, n_trials=5)
    if row.get("skipped"):
        pytest.skip(row["skipped"])
    assert row["recovered"], row
    said = "\n".join(row["first_user_saw"])
    assert "session ended: " in said and "cortexloop run --resume " in said, said
    assert "Traceback" not in said, said
    # The trial in flight when the session stopped is stored aborted with what stopped it; its images came again.
    assert row["interrupted_reasons"] and row["requeued"] >= 1, row
    assert all("disk full at " in r for r in row["interrupted_reasons"]), row["interrupted_reasons"]
    table = format_table([row])
    assert "disk-full" in table and "requeued" in table and "what the terminal of `cortexloop run` said" in table


@pytest.mark.parametrize("step_s", [0.02, 3.0])
def test_no_spike_of_a_stall_is_published_however_far_the_clock_steps(step_s):
    """A virtual clock (speed "max") can step over a whole stall in one poll; the spikes inside it still go
    unpublished, and those either side of it are published."""
    cortex, clock = _cortex(reorder=0.0, packet_loss=0.0, stall_after_s=2.0, stall_s=1.5)
    batches = _run(cortex, clock, steps=int(6.0 / step_s), step_s=step_s)
    since = np.concatenate([b.time_s for b in batches]) - cortex.start_s  # both on the acquisition clock
    assert len(since) and not ((since >= 2.0 + 0.01) & (since < 3.5 - 0.01)).any()
    assert (since < 2.0).any() and (since >= 3.5).any()
