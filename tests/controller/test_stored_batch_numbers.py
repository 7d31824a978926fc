"""A batch whose stream name and number the store holds from an earlier recording (a resumed source that numbers
its batches from 1 under the same name) is never taken for a repeat and dropped silently: its spikes are counted
lost and the windows over them invalid."""

import numpy as np

from contract import messages as m
from controller import protocol as p


def batch(seq: int, t0: float, t1: float, total: int, n: int = 3) -> m.SpikeBatch:
    return m.SpikeBatch(
        stream="s",
        seq=seq,
        t_start_s=t0,
        t_end_s=t1,
        total_spikes=total,
        neuron=np.zeros(n, np.uint16),
        time_s=np.linspace(t0, t1, n, endpoint=False),
    )


def test_a_batch_number_stored_by_an_earlier_recording_is_lost_not_a_repeat(engine):
    engine.store.put_spikes(batch(1, 0.0, 1.0, 3))  # the earlier recording, before a resume
    engine.store.put_spikes(batch(2, 1.0, 2.0, 6))
    engine._on_acquisition(batch(1, 10.0, 11.0, 3))  # the resumed recording, numbered from 1 again
    engine._on_acquisition(batch(2, 11.0, 12.0, 6))
    engine._on_acquisition(batch(3, 12.0, 13.0, 9))  # a number the store does not hold: binned
    st = engine.streams["s"]
    assert st.lost_intervals == [(10.0, 11.0), (11.0, 12.0)]
    assert st.lost_batches == 2 and st.lost_spikes == 6 and st.out_of_order_batches == 0
    assert st.received_spikes == 3 and st.last_seq == 3
    starts = np.array([10.2, 11.5, 12.1])
    assert p.windows_valid(starts, starts + 0.5, st.lost_intervals, np.ones(3, bool)).tolist() == [False, False, True]
    logged = [t for k, t in engine.store.conn.execute("SELECT kind, text FROM log") if k == "spikes_lost"]
    assert len(logged) == 2 and "batch 1 is stored already from an earlier recording" in logged[0]
    engine._on_acquisition(batch(3, 12.0, 13.0, 9))  # a true repeat of this run's: not binned twice, not lost
    assert st.out_of_order_batches == 1 and st.lost_batches == 2 and st.received_spikes == 3
