"""A flood of valid messages on one socket does not hold up the controller's loop: each pump() returns within its
time budget, and spikes from the acquisition stream keep being handled meanwhile.

The parts are the real ones: the virtual cortex process streams spikes on the wall clock, the flood is 100,000
valid OnsetReports pushed into the controller's inbox by another process, the engine is the session's own.
"""

import subprocess
import sys
import threading
import time

import zmq

from contract import messages as m
from controller.engine import SessionEngine
from controller.worlds import process_parts
from records.store import SessionStore
from stimulus.pools import make_pools
from tests.helpers import cli_env, serve, small_rig
from transport.launch import prepare_session_dir

N_FLOOD = 100_000

FLOODER = """
import sys, zmq
from contract import messages as m
sock = zmq.Context.instance().socket(zmq.PUSH)
sock.connect(sys.argv[1])
for i in range(int(sys.argv[2])):
    m.send(sock, m.OnsetReport(trial_id=1_000_000 + i // 100, index=i % 100, image_hash="f" * 16, flip_s=i * 1e-3,
                               frame=i))
print("sent", flush=True)
"""


def _answer_model_status(endpoint: str, stop: threading.Event) -> None:
    """The model worker's socket, answering the engine's start-up status request (no model is needed here)."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(endpoint)
    while not stop.is_set():
        if sock.poll(50):
            identity, *frames = sock.recv_multipart()
            req = m.decode(frames)
            if isinstance(req, m.ModelRequest):
                m.send_routed(sock, identity, m.ModelReply(request_id=req.request_id, op=req.op, model_version=-1))
    sock.close(linger=0)


def test_a_flood_of_onset_reports_keeps_each_pump_within_budget_and_spikes_flowing(tmp_path):
    rig = small_rig(speed="realtime")  # the cortex streams spike batches on the wall clock, as a rig does
    session_dir = tmp_path / "flood"
    endpoints = prepare_session_dir(rig, session_dir)
    cortex = serve("cortex", session_dir)
    stop = threading.Event()
    model = threading.Thread(target=_answer_model_status, args=(endpoints["model"], stop), daemon=True)
    model.start()
    store = SessionStore.create(session_dir, rig.model_dump_json())
    engine = SessionEngine(rig, store, process_parts(rig, endpoints), make_pools(rig.images))
    flooder = None
    try:
        engine.start(timeout_s=60)
        flooder = subprocess.Popen(
            [sys.executable, "-c", FLOODER, endpoints["controller_inbox"], str(N_FLOOD)],
            env=cli_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        # Until the flood is under way: the first of it handled.
        deadline = time.monotonic() + 60
        while not engine.onsets and time.monotonic() < deadline:
            engine.pump(50)
        assert engine.onsets, "the flood never reached the engine"
        durations, cpu, spikes_at = [], [], []
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            t0, c0 = time.monotonic(), time.thread_time()
            engine.pump(50)
            durations.append(time.monotonic() - t0)
            cpu.append(time.thread_time() - c0)
            spikes_at.append((time.monotonic(), sum(s.received_spikes for s in engine.streams.values())))
            engine._check_alive()  # the liveness checks go on: the cortex is heard from throughout
        handled = sum(len(v) for v in engine.onsets.values())
    finally:
        stop.set()
        engine.close()
        store.close()
        if flooder is not None:
            flooder.kill()
            flooder.wait()
        try:
            cortex.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cortex.kill()
            cortex.wait()
    # The flood was still coming in when the loop stopped: the engine was taking it all the time.
    assert 500 <= handled < N_FLOOD, handled
    # Pumps return within their budget, plus one message's handling and one poll per socket (at most
    # POLL_LIMIT messages decoded each). Without the budget a single pump handled every onset one poll
    # returned, each a committed row: 2.8-3.4 s of work, one or two pumps in the 3 s. What a pump does is
    # measured in this thread's CPU time, which a busy machine does not stretch (the scheduler can stop any one
    # pump for a few hundred ms of wall time; seen: one of 120 pumps took 0.42 s while the rest took under
    # 31 ms): 95% of pumps within the budget plus 0.1 s of work. In wall time: many pumps in the 3 s and none
    # near the seconds an unbudgeted one takes.
    budget = SessionEngine.PUMP_BUDGET_S
    ordered, ordered_cpu = sorted(durations), sorted(cpu)
    p95, p95_cpu = ordered[int(0.95 * (len(ordered) - 1))], ordered_cpu[int(0.95 * (len(cpu) - 1))]
    print(
        f"flood: {len(durations)} pumps in 3 s, p95 {p95 * 1000:.0f} ms ({p95_cpu * 1000:.0f} ms CPU), longest "
        f"{ordered[-1] * 1000:.0f} ms (budget {budget * 1000:.0f} ms); {handled} onsets handled; spikes "
        f"{spikes_at[0][1]} -> {spikes_at[-1][1]}"
    )
    assert len(durations) >= 10, len(durations)
    assert p95_cpu < budget + 0.1, (p95_cpu, ordered_cpu[-5:])
    assert ordered[-1] < 1.5, ordered[-5:]
    # Spikes kept coming while the flood was handled: more in every second of it (seconds, not less: the cortex
    # process shares a loaded 2-core machine with the flood and the engine).
    t0 = spikes_at[0][0]
    marks = [max(n for t, n in spikes_at if t <= t0 + k) for k in range(3)] + [spikes_at[-1][1]]
    assert all(b > a for a, b in zip(marks, marks[1:])), marks
