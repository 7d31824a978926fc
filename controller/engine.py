"""The session engine: executes the trial protocol's commands against the parts plugged into it.

One engine runs every world (contract/parts.py): the parts may be in this
process (tests, benchmarks, replay) or behind sockets (a rig). The protocol
(controller/protocol.py) decides the order and the rules; the engine dispatches,
waits for the parts and writes everything to the session store before it is
used. It never waits for the model beyond a plan's deadline: a late plan is
replaced by pool images and that is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from acquisition.alignment import fit_clock
from acquisition.binning import SpikeRecord
from contract import messages as m
from contract.images import image_hash
from contract.parts import MODEL_RESTART_REQUEST, AcquisitionSource, Clock, Model, Presenter, SessionAbort, check_part
from controller import protocol as p
from controller.config import RigConfig
from records.store import SessionStore
from stimulus.pools import Pools
from stimulus.selection import random_pool_indices

log = logging.getLogger("cortexloop.controller")


@dataclass
class SessionParts:
    """The parts a session runs on: which world it is, and nothing else."""

    clock: Clock
    source: AcquisitionSource
    presenter: Presenter
    model: Model
    mode: str  # "in-process" or "processes": recorded with the session, and in benchmark results

    def check(self) -> "SessionParts":
        check_part(self.clock, Clock, "clock")
        check_part(self.source, AcquisitionSource, "acquisition source")
        check_part(self.presenter, Presenter, "presenter")
        check_part(self.model, Model, "model")
        return self

    def all(self) -> list:
        return [self.source, self.presenter, self.model]


@dataclass
class StreamState:
    """One acquisition stream's bookkeeping: sequence, spikes received and lost, and where."""

    last_seq: int | None = None
    last_total: int = 0
    last_end_s: float | None = None
    received_spikes: int = 0
    lost_spikes: int = 0
    lost_batches: int = 0
    out_of_order_batches: int = 0
    lost_intervals: list = field(default_factory=list)  # [(t_from, t_to)] acquisition clock
    missing_seqs: list = field(default_factory=list)  # [(first, last)] batches counted lost, not yet arrived
    live_s: float = -np.inf  # where only spikes prove the stream live: the latest spike stamp
    silences: list = field(default_factory=list)  # [(t_from, t_to)] stretches with no spike (protocol.stream_silences)


def spike_batch_problem(msg: m.SpikeBatch, n_neurons: int) -> str | None:
    """Why a spike batch cannot be binned (None: it can)."""
    if msg.neuron.ndim != 1 or msg.time_s.ndim != 1 or len(msg.neuron) != len(msg.time_s):
        return f"{len(msg.neuron)} neuron indices but {len(msg.time_s)} spike times"
    if len(msg.neuron) and int(msg.neuron.max()) >= n_neurons:
        return f"spike from neuron {int(msg.neuron.max())}, the stream described {n_neurons}"
    if not (np.isfinite(msg.t_start_s) and np.isfinite(msg.t_end_s)) or msg.t_end_s < msg.t_start_s:
        return f"bad time span [{msg.t_start_s}, {msg.t_end_s})"
    if len(msg.time_s) and not np.isfinite(msg.time_s).all():
        return "spike times not finite"
    return None


class SessionEngine:
    """One session over its parts: `start()` (the stream describes itself, the model answers), `run(protocol)`,
    `close()`. Raises SessionAbort when a part needed for recording falls silent."""

    DEAD_AFTER_S = 10.0  # a recording part silent this long (wall) ends the session
    # Wall time one pump() spends handling messages (each part polled once, then its share of this). A message
    # under way is finished, so a pump returns within this plus one message's handling plus each socket's
    # poll (at most zmq_parts.POLL_LIMIT messages decoded).
    PUMP_BUDGET_S = 0.05
    IDLE_WAIT_S = 0.001  # how long an idle pump sleeps when no part has a socket to wait on (wall clock only)
    RESTART_MODEL_AFTER_LATE = 3  # plans in a row not answered in time: the model worker is hung, replace it

    def __init__(self, rig: RigConfig, store: SessionStore, parts: SessionParts, pools: Pools):
        self.rig = rig
        # A late plan shows what a random slot would show (selection.random_from: natural images by default),
        # not the whole pool, whose gaudy share is there for the image chooser to score.
        self.fallback_pool = random_pool_indices(pools.train_kind, rig.selection.random_from)
        self.store = store
        self.parts = parts.check()
        self.clock = parts.clock
        self.pools = pools
        self.rng = np.random.default_rng(rig.session.seed + 101)
        self.timing = rig.timing
        self.window = (rig.response.window_start_ms / 1000, rig.response.window_end_ms / 1000)
        self.poller = None
        # Messages a part's poll returned that a pump had no time left to handle, in the order they came.
        self._inputs = [
            (parts.source, self._on_acquisition, deque()),
            (parts.presenter, self._on_presenter, deque()),
            (parts.model, self._on_model, deque()),
        ]
        waitables = [w for part in parts.all() for w in part.waitables()]
        if waitables:
            self.poller = zmq.Poller()
            for w in waitables:
                self.poller.register(w, zmq.POLLIN)

        self.n_neurons = 0
        self.record: SpikeRecord | None = None
        self.streams: dict[str, StreamState] = {}
        self.last_seen: dict[str, float] = {}
        self.trial_reports: dict[int, m.TrialReport] = {}
        self.trial_started_wall: dict[int, float] = {}
        self.trial_ended_wall: dict[int, float] = {}
        self.onsets: dict[int, dict[int, m.OnsetReport]] = {}
        self.acq_onsets: dict[tuple[int, int], float] = {}
        # Photodiode edges on the acquisition clock (sorted); where a source reports them, they are the onsets.
        self.photodiode_edges: list[float] = []
        self.photodiode_max_lag_s = p.photodiode_max_lag_s(self.timing)
        self.photodiode_latencies_s: list[float] = []
        self.onsets_without_photodiode = 0
        # Onset codes recorded without a trial label are paired with the flips in order (protocol.OnsetLabeller).
        self.labeller = p.OnsetLabeller(p.label_tolerance_s(self.timing))
        self.model_replies: dict[int, m.ModelReply] = {}
        self.presented: dict[int, m.TrialPlan] = {}  # sent to the presenter, responses not yet collected
        self.plan_requests: dict[int, dict] = {}
        self.request_id = 0
        self.model_version_seen = -1
        self.latencies_s: list[float] = []
        self.plans_on_time = 0
        self.plans_late = 0
        self.bad_batches = 0
        self.dropped_frames = 0
        # Where only spikes prove the stream live (the source's describe() says "proof": "spikes"): the longest
        # stretch without one that is not a stall (protocol.window_covered); None where the source's own clock
        # is proof.
        self.max_silence_s: float | None = None
        self.codes_prove = False  # the source's event codes prove the stream live too (protocol.STREAM_PROOF)
        self.silent_windows = 0  # responses stored invalid: the stream was silent over their window
        self.misshown_images = 0  # responses stored invalid: the image was not shown as planned
        self.last_fault = ""  # the latest image not shown as planned, and why (for the live status)
        self.last_silence = ""  # the latest window the stream was silent over (for the live status)
        self.status = None  # optional controller.status.StatusBoard, redrawn from the message loop
        self.gaps: list[tuple[float, float]] = []
        self.last_collected_wall: float | None = None
        self.presenter_info: dict = {}
        self.source_info: dict = {}
        # Optional callable(engine, trial_id) -> None or a reason to end the session early (a benchmark that
        # reached its target); called after each completed trial's responses went to the model.
        self.after_update = None
        self.ended_early: str | None = None
        self.launcher_alive = None  # optional callable: False once the process that started this one is gone
        self.responses_sent = 0
        self.last_refeed_request = 0
        self.workers_seen: set[str] = set()  # the model workers that answered, as their replies name them
        self.late_in_a_row = 0
        self.model_restarts_asked = 0
        self.model_reply_wall: float | None = None  # time.time() of the model worker's last reply
        self.late_since_wall: float | None = None  # time.time() when the current run of late plans began
        self.restart_pending = False  # a restart request written that the launcher may not have acted on yet
        self._launcher_checked = 0.0

    # -- message handling ------------------------------------------------------
    def pump(self, timeout_ms: float) -> None:
        """Handle what the parts have (waiting up to timeout_ms when nothing is there), for at most
        PUMP_BUDGET_S of handling: a flood on one socket cannot keep the loop from its liveness checks, its
        plans, or the other sockets (what is left waits in order for the next pump)."""
        got = self._poll_parts()
        if not got and timeout_ms > 0:
            if self.poller is not None:
                if self.poller.poll(timeout_ms):
                    self._poll_parts()
            elif self.clock.passes_while_waiting:
                # Every part is polled in this process and nothing has a socket to wait on: on the wall clock an
                # idle loop would spin a core the parts (a source's thread, a screen) need. A short sleep, well
                # inside a frame, instead.
                time.sleep(min(timeout_ms / 1000, self.IDLE_WAIT_S))
        if self.status is not None:
            self.status.tick(self)

    def _poll_parts(self) -> int:
        """Each part is polled at most once a call, and not while messages of its last poll wait (an
        in-process presenter shows a trial when polled: polling it more often would change what a session
        does). What came in is handled in the parts' order, each part within its share of what is left of
        the budget (remaining / parts to go: about a third each under a flood, and time one part leaves
        unused goes to the parts after it); each handles at least one message a call, so none stalls.
        Returns how many messages were handled."""
        start = time.monotonic()
        n = 0
        for k, (part, handle, backlog) in enumerate(self._inputs):
            if not backlog:
                backlog.extend(part.poll(0))
            share_end = time.monotonic() + max(0.0, start + self.PUMP_BUDGET_S - time.monotonic()) / (
                len(self._inputs) - k
            )
            while backlog:
                handle(backlog.popleft())
                n += 1
                if time.monotonic() >= share_end:
                    break
        return n

    def _on_acquisition(self, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, m.SpikeBatch):
            self.last_seen["acquisition"] = now
            self._on_spikes(msg)
        elif isinstance(msg, m.EventCode):
            self.last_seen["acquisition"] = now
            self.store.put_event(msg)
            if self.codes_prove and msg.clock == "acquisition":
                self._proof(self.streams.setdefault(msg.stream, StreamState()), msg.stream, [msg.time_s])
            if msg.code == m.Codes.PHOTODIODE and msg.clock == "acquisition":
                self.photodiode_edges.append(msg.time_s)  # a stream's events come in time order
            elif msg.code == m.Codes.IMAGE_ONSET and msg.clock == "acquisition":
                if msg.trial_id >= 0:
                    self.acq_onsets[(msg.trial_id, msg.index)] = msg.time_s
                else:
                    self.labeller.add_code(msg.time_s)
                    self.acq_onsets.update(self.labeller.pair())
        elif isinstance(msg, m.Heartbeat):
            self.last_seen["acquisition"] = now
            # A heartbeat says how far the stream's clock got, so a quiet stream still completes windows; but one
            # that names a later batch than any received ran past a batch lost on the way, whose spikes would be
            # missing from the windows it completed: the gap is recorded when the next batch arrives.
            st = self.streams.get(msg.stream)
            sent = msg.info.get("batch_seq")
            behind = isinstance(sent, int) and sent > (st.last_seq if st is not None and st.last_seq is not None else 0)
            if msg.stream and not behind and np.isfinite(msg.clock_s):
                self.record.advance(msg.clock_s)

    def _on_spikes(self, msg: m.SpikeBatch) -> None:
        problem = spike_batch_problem(msg, self.n_neurons)
        if problem is not None:
            self.bad_batches += 1
            self.store.log("bad_spikes", f"stream {msg.stream} seq {msg.seq}: {problem}; dropped")
            return
        st = self.streams.setdefault(msg.stream, StreamState())
        late = st.last_seq is not None and msg.seq <= st.last_seq
        if not self.store.put_spikes(msg):  # the store had it already: a repeat, not binned twice
            if st.last_seq is None or msg.seq > st.last_seq:
                # Not a repeat of this run's (nothing after the last batch received has come): the store holds an
                # earlier recording's batch of this name and number. These spikes can be neither stored nor binned,
                # so the windows over them are invalid. (A resumed source labels its stream anew to avoid this.)
                st.lost_batches += 1
                st.lost_spikes += len(msg.neuron)
                st.lost_intervals.append((msg.t_start_s, msg.t_end_s))
                st.last_seq, st.last_total, st.last_end_s = msg.seq, msg.total_spikes, msg.t_end_s
                self.store.log(
                    "spikes_lost",
                    f"stream {msg.stream}: batch {msg.seq} is stored already from an earlier recording of this name; "
                    f"its {len(msg.neuron)} spikes ({msg.t_start_s:.3f}..{msg.t_end_s:.3f} s) not binned",
                )
                return
            st.out_of_order_batches += 1
            self.store.log("spikes_out_of_order", f"stream {msg.stream}: batch {msg.seq} again; not binned twice")
            return
        if late:
            # A batch that arrives after a later one (a transport that reorders): stored above and binned
            # below like any other. Its gap was counted lost when the later batch came; it is not lost.
            st.out_of_order_batches += 1
            self._recover_late(st, msg)
        elif st.last_seq is not None and msg.seq != st.last_seq + 1:
            lost = msg.total_spikes - len(msg.neuron) - st.last_total
            st.lost_batches += msg.seq - st.last_seq - 1
            st.lost_spikes += max(lost, 0)
            st.missing_seqs.append((st.last_seq + 1, msg.seq - 1))
            # The lost batches covered the stream's clock from the end of the last batch received.
            st.lost_intervals.append((st.last_end_s, msg.t_start_s))
            self.store.log(
                "spikes_lost",
                f"stream {msg.stream}: batches {st.last_seq + 1}..{msg.seq - 1} "
                f"({lost} spikes, {st.last_end_s:.3f}..{msg.t_start_s:.3f} s) lost",
            )
        if not late:
            st.last_seq, st.last_total, st.last_end_s = msg.seq, msg.total_spikes, msg.t_end_s
        st.received_spikes += len(msg.neuron)
        # SpikeRecord.add never moves the stream's clock back, and counts spikes in any order.
        self.record.add(msg.neuron, msg.time_s, msg.t_end_s)
        if self.max_silence_s is not None:
            self._proof(st, msg.stream, msg.time_s)

    def _proof(self, st: StreamState, stream: str, stamps) -> None:
        """Stamps of real messages (spikes; where the source says so, event codes too) prove the stream live at
        their times; the silences they reveal are logged (protocol.stream_silences)."""
        silences, st.live_s = p.stream_silences(st.live_s, stamps, self.max_silence_s)
        for a, b in silences:
            st.silences.append((a, b))
            self.store.log(
                "stream_silent",
                f"stream {stream}: nothing from {a:.3f} to {b:.3f} s ({b - a:.3f} s); windows over it stored invalid",
            )

    def _recover_late(self, st: StreamState, msg: m.SpikeBatch) -> None:
        """A late batch's spikes are no longer lost: its time span leaves the lost intervals, so the windows
        over it that are still to be collected are valid again (if no other lost batch touches them). A window
        already collected stays as it was stored: invalid, its counts made without this batch; the store keeps
        every write, and the model was never given it."""
        gap = next((g for g in st.missing_seqs if g[0] <= msg.seq <= g[1]), None)
        if gap is not None:
            # A batch from a counted gap: the loss it was counted in is taken back.
            st.missing_seqs.remove(gap)
            st.missing_seqs += [g for g in ((gap[0], msg.seq - 1), (msg.seq + 1, gap[1])) if g[0] <= g[1]]
            st.lost_batches -= 1
            st.lost_spikes = max(st.lost_spikes - len(msg.neuron), 0)
        # Else it comes from before the first batch received (reordered at the stream's start): nothing was
        # counted lost for it, its spikes are simply added.
        a, b = msg.t_start_s, msg.t_end_s
        kept = []
        for lo, hi in st.lost_intervals:
            if hi <= a or b <= lo:
                kept.append((lo, hi))
                continue
            kept += [iv for iv in ((lo, a), (b, hi)) if iv[0] < iv[1]]
        st.lost_intervals = kept
        self.store.log(
            "spikes_out_of_order",
            f"stream {msg.stream}: batch {msg.seq} after {st.last_seq}; stored "
            f"and binned ({len(msg.neuron)} spikes, {a:.3f}..{b:.3f} s no longer "
            f"lost)",
        )

    def _on_presenter(self, msg) -> None:
        now = time.monotonic()
        self.last_seen["presenter"] = now
        if isinstance(msg, m.OnsetReport):
            self.store.put_onset(msg)
            self.onsets.setdefault(msg.trial_id, {})[msg.index] = msg
            self.labeller.add_flip((msg.trial_id, msg.index), msg.flip_s)
            self.acq_onsets.update(self.labeller.pair())
        elif isinstance(msg, m.TrialReport):
            if msg.status == "started":
                self.trial_started_wall[msg.trial_id] = now
                return
            self.store.put_trial(msg)
            if msg.status == "gap":
                self.gaps.append((msg.start_s, msg.end_s))
                return
            self.trial_reports[msg.trial_id] = msg
            self.trial_ended_wall[msg.trial_id] = now
            self.dropped_frames += msg.dropped_frames
        elif isinstance(msg, m.Heartbeat) and msg.info:
            self.presenter_info = msg.info

    def _on_model(self, msg) -> None:
        self.last_seen["model"] = time.monotonic()
        self.model_reply_wall = time.time()
        if self.restart_pending:
            # The worker speaks (a new one that finished starting, or one answering old requests it was sent
            # while it was away): slow, not hung. The request the launcher has let wait is withdrawn.
            self._withdraw_restart("the model worker answered")
        if not isinstance(msg, m.ModelReply):
            return
        if msg.op == "plan":
            req = self.plan_requests.get(msg.trial_id)
            if req is not None and req["id"] == msg.request_id:
                req["ready_wall"] = time.monotonic()
                self.model_replies[msg.trial_id] = msg
        else:
            self.model_replies[-msg.request_id] = msg  # predictions and status, keyed by request
        worker = msg.info.get("worker") if isinstance(msg.info, dict) else None
        new_worker = worker is not None and bool(self.workers_seen) and worker not in self.workers_seen
        if worker is not None:
            self.workers_seen.add(worker)
        if self.responses_sent and (
            new_worker
            or (msg.model_version == -1 and msg.request_id > self.last_refeed_request and msg.op in ("plan", "status"))
        ):
            # Another worker answers (its replies name it), or a model with no responses after some were sent: the
            # worker was restarted (it died, or hung and was replaced). Its weights come from its checkpoint, which
            # may already give it a model version; its data from the store, once.
            self.last_refeed_request = self.request_id
            # The new worker answers: the plans it was late with were its start-up, not a hang. It gets a
            # fresh count, and a request to replace it that the launcher let wait is withdrawn.
            self.late_in_a_row = 0
            n = self.relearn_stored_responses()
            self.store.log(
                "model",
                f"model worker answered {'as a new worker' if new_worker else 'with no model'} after "
                f"{self.responses_sent} responses: restarted; the {n} stored valid responses sent to it again",
            )
        if msg.model_version != self.model_version_seen:
            self.model_version_seen = msg.model_version
            # A plan's reply names its trial; a status or predict reply is placed at the latest trial reported.
            trial = msg.trial_id if msg.trial_id >= 0 else max(self.trial_reports, default=-1)
            self.store.put_model_version(msg.model_version, trial, msg.info)

    def _check_alive(self) -> None:
        now = time.monotonic()
        # The presenter heartbeats between trials and, during a trial, right after its flips (rate-limited,
        # stimulus/presenter_part.py); the inter-trial interval's frames have no such moment, so its limit allows for that
        # interval. The acquisition stream speaks all the time.
        limits = {
            "acquisition": self.DEAD_AFTER_S,
            "presenter": self.DEAD_AFTER_S + self.timing.iti_frames / self.timing.refresh_hz,
        }
        for role, limit in limits.items():
            seen = self.last_seen.get(role)
            if seen is not None and now - seen > limit:
                raise SessionAbort(f"{role} silent for {now - seen:.1f} s")
        if self.launcher_alive is not None and now - self._launcher_checked > 1.0:
            self._launcher_checked = now
            if not self.launcher_alive():
                raise SessionAbort("the launcher is gone")

    def wait_for(self, cond, timeout_s: float, check_alive: bool = True) -> bool:
        end = time.monotonic() + timeout_s
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05) * 1000)
            if check_alive:
                self._check_alive()
        return True

    def _keys_hint(self, socket: str) -> str:
        """With CURVE keys, a peer whose key is refused is never heard from at all (transport/security.py):
        where silence ends a session, say what to check."""
        if not self.rig.security.enabled:
            return ""
        return (
            f" (the sockets use CURVE keys: a refused key looks like silence. Check that the connecting "
            f"machine's public key is in the authorized_keys directory of the machine that binds "
            f"{socket}, and that both name the same server_key)"
        )

    # -- start-up ----------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        """The acquisition side says what it records (the neuron count comes from it); all parts answer."""
        info = self.parts.source.describe(timeout_s)
        if not info or "n_neurons" not in info:
            raise SessionAbort(
                f"the acquisition source did not describe its stream within {timeout_s:.0f} s"
                + self._keys_hint("the acquisition stream's socket")
            )
        self.source_info = info
        proof = p.stream_proof(info)
        self.max_silence_s = self.rig.response.max_silence_ms / 1000 if proof != "clock" else None
        self.codes_prove = proof == "events"
        self.store.set_meta("stream_proof", proof)
        self.n_neurons = int(info["n_neurons"])
        self.record = SpikeRecord(self.n_neurons)
        self.store.set_meta("neurons", str(self.n_neurons))
        self.store.set_meta("engine_mode", self.parts.mode)
        self.store.set_meta("clock", self.clock.name)
        self.last_seen["acquisition"] = time.monotonic()
        rid = self._model_request("status")
        if not self.wait_for(lambda: -rid in self.model_replies, 15.0, check_alive=False):
            self.store.log("model", "model worker not answering at start; pool images until it does")

    def ask_model_restart(self) -> None:
        """Ask whoever started the model worker to replace it (the launcher watches for this file); the
        rig carries on with pool images meanwhile. The request says when the controller last heard from a
        worker (wall clock, comparable across processes): a worker the launcher started after that has never
        answered, it is still starting (torch, the pools, its checkpoint), and the launcher gives it a
        start-up grace before it counts as hung (transport/launch.py)."""
        self.model_restarts_asked += 1
        why = f"{self.late_in_a_row} plans in a row not ready in time"
        path = self._restart_request_path
        tmp = path.with_suffix(".tmp")  # renamed into place: the launcher never reads half a request
        tmp.write_text(json.dumps({"why": why, "last_reply_wall": self.model_reply_wall}))
        os.replace(tmp, path)
        self.restart_pending = True
        self.store.log("model", f"{why}: model worker restart asked")

    def _withdraw_restart(self, why: str) -> None:
        self.restart_pending = False
        if self._restart_request_path.exists():
            self._restart_request_path.unlink(missing_ok=True)
            self.store.log("model", f"model worker restart request withdrawn: {why}")

    @property
    def _restart_request_path(self) -> Path:
        return Path(self.store.path).parent / MODEL_RESTART_REQUEST

    def relearn_stored_responses(self, chunk: int = 100) -> int:
        """A resumed session: every valid response the store holds goes back to the model (its weights come
        from its own checkpoint; its data from here). Returns how many."""
        stored = self.store.responses(valid_only=True)
        n = len(stored["image_hash"])
        for s in range(0, n, chunk):
            msg = m.ResponsesUpdate(
                trial_id=int(stored["trial_id"][s]),
                image_hashes=stored["image_hash"][s : s + chunk],
                pixels=stored["pixels"][s : s + chunk],
                counts=stored["counts"][s : s + chunk],
            )
            try:
                self.parts.model.update(msg)
            except zmq.Again:
                self.store.log("model", "model worker not accepting the stored responses on resume")
                break
        return n

    # -- commands ------------------------------------------------------------------
    def _model_request(self, op: str, **kw) -> int:
        self.request_id += 1
        self.parts.model.request(m.ModelRequest(request_id=self.request_id, op=op, **kw))
        return self.request_id

    def request_plan(self, cmd: p.RequestPlan) -> None:
        steps = self.clock.training_budget(self.rig.model.steps_per_trial) or 0
        sent = time.monotonic()  # before the request: an in-process model answers inside it
        try:
            rid = self._model_request(
                "plan", trial_id=cmd.trial_id, n_images=self.timing.images_per_trial, train_steps=steps
            )
        except zmq.Again:
            rid = -1
        self.plan_requests[cmd.trial_id] = {"id": rid, "sent_wall": sent, "trigger_wall": self.last_collected_wall}

    def _presenter_needs_plan_at(self, trial_id: int) -> float | None:
        """Wall time by which the presenter needs trial_id's plan; None where trials take no wall time or
        it cannot be known yet."""
        if not self.clock.passes_while_waiting or trial_id == 0:
            return None
        prev = trial_id - 1
        if prev in self.trial_ended_wall:  # the presenter is already idle: it is late now
            return self.trial_ended_wall[prev]
        if prev in self.trial_started_wall:
            return self.trial_started_wall[prev] + self.timing.trial_s - self.rig.trial.plan_margin_ms / 1000
        return None

    def take_images(self, cmd: p.TakeImages) -> p.Offer:
        req = self.plan_requests[cmd.trial_id]
        while True:
            reply = self.model_replies.pop(cmd.trial_id, None)
            if reply is not None:
                break
            deadline = p.plan_deadline(
                req["sent_wall"], self.rig.trial.virtual_plan_timeout_s, self._presenter_needs_plan_at(cmd.trial_id)
            )
            if time.monotonic() >= deadline:
                break
            self.pump(5)
            self._check_alive()
        if reply is not None and len(reply.image_hashes) >= cmd.n:
            self.plans_on_time += 1
            if req.get("trigger_wall") is not None:
                # From the moment the request could be made (its trial's window complete, or the trial that
                # freed its place aborted) to the plan being ready.
                latency = req["ready_wall"] - max(req["trigger_wall"], req["sent_wall"])
                self.latencies_s.append(latency)
                self.store.log("plan_latency", json.dumps({"trial_id": cmd.trial_id, "ms": round(latency * 1000, 3)}))
                if latency > 0.5 * self.timing.trial_s:
                    self.store.log(
                        "slow_plan",
                        f"trial {cmd.trial_id}: plan ready {latency * 1000:.0f} ms after "
                        f"the response window it follows",
                    )
            self.late_in_a_row = 0
            return p.Offer(list(zip(reply.image_hashes, reply.pixels, reply.reasons)), "model", reply.model_version)
        self.plans_late += 1
        self.late_in_a_row += 1
        if self.late_in_a_row == 1:
            self.late_since_wall = time.time()
        silent = self.model_reply_wall is None or self.model_reply_wall < self.late_since_wall
        if self.late_in_a_row % self.RESTART_MODEL_AFTER_LATE == 0 and silent:
            # Hung: late plans in a row and not a word from the worker since they began. A worker that answers,
            # late (a new one working through the requests queued for it while it was away), is left to catch
            # up. Asked again every few late plans, in case a request was withdrawn and the worker fell silent.
            self.ask_model_restart()
        self.store.log("plan_late", f"trial {cmd.trial_id}: model plan not ready in time; pool images used")
        return p.pool_offer(self.pools.train, image_hash, self.rng, cmd.n, self.fallback_pool)

    def present(self, cmd: p.Present) -> None:
        plan = m.TrialPlan(
            trial_id=cmd.trial_id,
            image_hashes=[it[0] for it in cmd.items],
            model_version=cmd.model_version,
            source=cmd.source,
            reasons=[it[2] for it in cmd.items],
            pixels=np.stack([it[1] for it in cmd.items]),
            **self.timing.plan_fields(),
        )
        self.store.put_plan(plan)  # stored before it is used
        self.presented[cmd.trial_id] = plan
        self.parts.presenter.submit(plan)

    def await_trial(self, cmd: p.AwaitTrial) -> m.TrialReport:
        ok = self.wait_for(lambda: cmd.trial_id in self.trial_reports, max(60.0, 20 * self.timing.trial_s))
        if not ok:
            raise SessionAbort(
                f"trial {cmd.trial_id}: no report from the presenter" + self._keys_hint("endpoints.controller_inbox")
            )
        report = self.trial_reports[cmd.trial_id]
        if report.status != "done":
            self.presented.pop(cmd.trial_id, None)  # no responses will be collected from it
        return report

    def collect(self, cmd: p.CollectResponses) -> list[dict]:
        tid = cmd.trial_id
        report = self.trial_reports[tid]
        indices = list(range(report.n_onsets))
        # Every onset's report and its event code as recorded by the acquisition system.
        self.wait_for(
            lambda: (
                len(self.onsets.get(tid, {})) >= report.n_onsets
                and all((tid, i) in self.acq_onsets or (tid, i) in self.labeller.unmatched for i in indices)
            ),
            5.0,
        )
        missing = [i for i in indices if i not in self.onsets.get(tid, {})]
        if missing:
            raise SessionAbort(
                f"trial {tid}: the presenter reported {report.n_onsets} onsets but sent no "
                f"onset report for image(s) {missing}"
            )
        flips = [self.onsets[tid][i].flip_s for i in indices]
        recorded = [self.acq_onsets.get((tid, i)) for i in indices]
        fit = self.clock_fit() if None in recorded else None
        onset_acq, known = p.onset_times(recorded, flips, fit)
        for i in np.flatnonzero(~known):
            self.store.log(
                "event_missing",
                f"trial {tid} image {i}: no recorded event code and no clock fit; response kept invalid",
            )
        for i in np.flatnonzero(known & np.array([r is None for r in recorded], bool)):
            self.store.log("event_missing", f"trial {tid} image {i}: no recorded event code; onset mapped by clock fit")
        if self.uses_photodiode:
            onset_acq = self._photodiode_onsets(tid, onset_acq, known)
        starts, ends = p.response_windows(onset_acq, *self.window)
        last_end = float(np.nanmax(ends)) if known.any() else -np.inf
        if not self.wait_for(lambda: self.covered(last_end), max(30.0, 5 * self.timing.trial_s)):
            raise SessionAbort(f"trial {tid}: acquisition clock stopped before the response window ended")
        self.last_collected_wall = time.monotonic()
        counts = self.record.counts(np.nan_to_num(starts), np.nan_to_num(ends))
        lost = [iv for st in self.streams.values() for iv in st.lost_intervals]
        valid = p.windows_valid(starts, ends, lost, known)
        plan = self.presented[tid]
        faults = self._faults(tid, report, plan, starts, ends, known)
        valid &= np.array([f is None for f in faults], bool)
        rows = []
        for i in indices:
            onset = self.onsets[tid][i]
            rows.append(
                dict(
                    trial_id=tid,
                    idx=i,
                    image_hash=onset.image_hash,
                    onset_acq_s=float(onset_acq[i]),
                    window_start_s=float(starts[i]),
                    window_end_s=float(ends[i]),
                    counts=counts[i],
                    valid=bool(valid[i]),
                    model_version=plan.model_version,
                    source=plan.source,
                    reason=plan.reasons[i],
                    fault=faults[i],
                )
            )
        self.store.put_responses(rows)
        if not known.any() and not self.acq_onsets and not self.labeller.codes:
            # No onset code recorded in this session, so no clock fit either: every response would be invalid.
            others = self.store.count("event_codes", "WHERE clock = 'acquisition'")
            raise SessionAbort(
                f"trial {tid}: the acquisition system recorded no image-onset code (code {m.Codes.IMAGE_ONSET}) "
                f"in this session ({others} other event codes), so no response can be placed on its clock; is the "
                f"presenter's event output recorded by the acquisition system (streams "
                f"{', '.join(map(str, self.source_info.get('streams', []))) or '?'})?"
            )
        if known.any():
            self.record.forget_before(float(np.nanmin(onset_acq)))
        return rows

    def covered(self, end_s: float) -> bool:
        """Whether a window ending at end_s can be collected (protocol.window_covered): the stream's clock has
        passed it, and where only spikes prove the stream live, a spike after it came or a stall is going on."""
        return p.window_covered(end_s, self.record.clock_s, self.live_s, self.max_silence_s)

    @property
    def live_s(self) -> float:
        """The latest spike stamp of any stream: the last proof that the recording was live."""
        return max((st.live_s for st in self.streams.values()), default=-np.inf)

    def _faults(self, tid: int, report, plan, starts, ends, known) -> list:
        """Per image: None, or why its response is invalid for a fault and its image is to be shown again: the
        stream silent over its window (protocol.stream_silences), or the image not shown as planned
        (protocol.presentation_faults). Each is logged and counted."""
        faults = p.presentation_faults(
            report.frame_intervals_s,
            report.n_onsets,
            plan.fixation_frames,
            plan.on_frames,
            plan.off_frames,
            self.timing.refresh_hz,
            self.rig.trial.max_frame_error,
        )
        for i, f in enumerate(faults):
            if f is not None:
                self.misshown_images += 1
                self.last_fault = f"trial {tid} image {i}: {f}"
                self.store.log("presentation_fault", f"trial {tid} image {i}: {f}; response invalid, image requeued")
        if self.max_silence_s is not None:
            silences = [iv for st in self.streams.values() for iv in st.silences]
            now = p.open_silence(self.live_s, self.record.clock_s, self.max_silence_s)
            silences += [now] if now is not None else []
            silent = p.overlapping(np.nan_to_num(starts), np.nan_to_num(ends), silences) & np.asarray(known, bool)
            for i in np.flatnonzero(silent):
                why = "stream silent over the window"
                faults[i] = why if faults[i] is None else f"{faults[i]}; {why}"
                self.silent_windows += 1
                self.last_silence = f"trial {tid} image {i}, {starts[i]:.3f}..{ends[i]:.3f} s"
                self.store.log(
                    "window_uncovered",
                    f"trial {tid} image {i}: nothing from the stream proves it live over "
                    f"{starts[i]:.3f}..{ends[i]:.3f} s; response invalid, image requeued",
                )
        return faults

    @property
    def uses_photodiode(self) -> bool:
        return bool(self.source_info.get("photodiode")) or bool(self.photodiode_edges)

    def _photodiode_onsets(self, tid: int, code_times: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Onsets moved to the photodiode edge that follows each code (once the stream has passed the latest
        time an edge could come); an onset with no edge keeps its code time and is counted."""
        latest = float(np.nanmax(code_times)) + self.photodiode_max_lag_s if known.any() else -np.inf
        self.wait_for(lambda: self.record.complete(latest), max(30.0, 5 * self.timing.trial_s))
        times, found = p.photodiode_onsets(code_times, np.asarray(self.photodiode_edges), self.photodiode_max_lag_s)
        self.photodiode_latencies_s += (times[found] - code_times[found]).tolist()
        missing = int((known & ~found).sum())
        if missing:
            self.onsets_without_photodiode += missing
            self.store.log(
                "photodiode_missing",
                f"trial {tid}: {missing} onset(s) without a photodiode edge within "
                f"{self.photodiode_max_lag_s * 1000:.0f} ms; code time used",
            )
        return times

    def update_model(self, cmd: p.UpdateModel) -> None:
        if not cmd.rows:
            return
        tid = cmd.rows[0]["trial_id"]
        plan = self.presented.pop(tid)
        rows = [r for r in cmd.rows if r["valid"]]
        if rows:
            msg = m.ResponsesUpdate(
                trial_id=tid,
                image_hashes=[r["image_hash"] for r in rows],
                pixels=np.stack([plan.pixels[r["idx"]] for r in rows]),
                counts=np.stack([r["counts"] for r in rows]).astype(np.float32),
            )
            try:
                self.parts.model.update(msg)
                self.responses_sent += len(rows)
            except zmq.Again:
                self.store.log("model", f"trial {tid}: model worker not accepting responses")
        if self.after_update is not None:
            self.ended_early = self.after_update(self, tid) or None

    # -- the run -------------------------------------------------------------------
    def run(self, protocol) -> p.Finish:
        handlers = {
            p.RequestPlan: self.request_plan,
            p.TakeImages: self.take_images,
            p.Present: self.present,
            p.AwaitTrial: self.await_trial,
            p.CollectResponses: self.collect,
            p.UpdateModel: self.update_model,
        }
        result = None
        try:
            while self.ended_early is None:
                cmd = protocol.send(result)
                result = handlers[type(cmd)](cmd)
        except StopIteration as stop:
            return stop.value
        protocol.close()
        self.store.log("session", f"ended early: {self.ended_early}")
        return p.Finish(
            self.store.count("trials", "WHERE status = 'done'"), self.store.count("trials", "WHERE status = 'aborted'")
        )

    def clock_fit(self):
        pairs = [
            (o.flip_s, self.acq_onsets[(t, i)])
            for t, d in self.onsets.items()
            for i, o in d.items()
            if (t, i) in self.acq_onsets
        ]
        if not pairs:
            return None
        a = np.array(pairs)
        return fit_clock(a[:, 0], a[:, 1])

    def predict(self, pixels: np.ndarray, timeout_s: float = 60.0) -> m.ModelReply | None:
        """The model's rates for pixels; never raises for a dead part (used while the summary is built)."""
        try:
            rid = self._model_request("predict", pixels=pixels)
        except zmq.Again:
            return None
        if self.wait_for(lambda: -rid in self.model_replies, timeout_s, check_alive=False):
            return self.model_replies.pop(-rid)
        return None

    def model_status(self, timeout_s: float = 10.0) -> dict:
        try:
            rid = self._model_request("status")
        except zmq.Again:
            return {}
        if self.wait_for(lambda: -rid in self.model_replies, timeout_s, check_alive=False):
            return self.model_replies.pop(-rid).info
        return {}

    def close(self) -> None:
        for part in self.parts.all():
            try:
                part.close()
            except Exception as err:  # closing must reach every part, whatever one of them does
                log.warning("closing %s: %s", type(part).__name__, err)
