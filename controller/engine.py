"""The session engine: runs the trial protocol against the real processes over ZeroMQ.

The engine owns the sockets, the session store and the clocks; the protocol
(controller/protocol.py) owns the order of things. Every message received is
written to the store before it is used. The engine never waits for the model
beyond a plan's deadline: a late plan is replaced by pool images and that is
recorded.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from acquisition.alignment import fit_clock
from acquisition.binning import SpikeRecord
from controller import messages as m
from controller import protocol as p
from controller.config import RigConfig
from controller.links import Receiver
from controller.store import SessionStore
from stimulus.images import image_hash
from stimulus.pools import Pools

log = logging.getLogger("cortexloop.controller")


class SessionAbort(RuntimeError):
    """The session cannot go on (a process needed for recording stopped answering)."""


@dataclass
class PlannedTrial:
    """A plan as the protocol sees it: the message, plus how many requeued images it took."""

    msg: m.TrialPlan
    n_requeued: int = 0

    def requeue_items(self) -> list[tuple[str, np.ndarray, str]]:
        return [(h, px, f"requeued from trial {self.msg.trial_id}: {r}")
                for h, px, r in zip(self.msg.image_hashes, self.msg.pixels, self.msg.reasons)]


@dataclass
class StreamState:
    last_seq: int | None = None
    last_total: int = 0
    received_spikes: int = 0
    lost_spikes: int = 0
    lost_batches: int = 0
    lost_intervals: list = field(default_factory=list)  # [(t_from, t_to)] acquisition clock


class SessionEngine:
    DEAD_AFTER_S = 10.0  # a recording process silent this long (wall) ends the session

    def __init__(self, rig: RigConfig, store: SessionStore, endpoints: dict[str, str], pools: Pools,
                 n_neurons: int, ctx: zmq.Context | None = None):
        self.rig = rig
        self.store = store
        self.pools = pools
        self.n_neurons = n_neurons
        self.virtual = rig.session.speed == "max"
        self.ctx = ctx or zmq.Context.instance()
        self.rng = np.random.default_rng(rig.session.seed + 101)
        hz = rig.display.refresh_hz
        t = rig.trial
        self.frames = dict(fixation_frames=round(t.fixation_ms * hz / 1000), on_frames=max(1, round(t.on_ms * hz / 1000)),
                           off_frames=round(t.off_ms * hz / 1000), iti_frames=round(t.iti_ms * hz / 1000))
        self.trial_s = (self.frames["fixation_frames"] + t.images_per_trial * (self.frames["on_frames"] + self.frames["off_frames"])
                        + self.frames["iti_frames"]) / hz
        self.window = (rig.response.window_start_ms / 1000, rig.response.window_end_ms / 1000)

        self.acq_sub = self.ctx.socket(zmq.SUB)
        self.acq_sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.acq_sub.setsockopt(zmq.RCVHWM, 0)
        self.acq_sub.connect(endpoints["acquisition_pub"])
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(endpoints["controller_inbox"])
        self.plans_out = self.ctx.socket(zmq.PUSH)
        self.plans_out.connect(endpoints["presenter_plans"])
        self.events_out = self.ctx.socket(zmq.PUSH)  # to the cortex, for Shutdown only
        self.events_out.connect(endpoints["acquisition_events"])
        self.model = self.ctx.socket(zmq.DEALER)
        self.model.connect(endpoints["model"])
        for s in (self.plans_out, self.events_out, self.model):
            s.setsockopt(zmq.LINGER, 1000)
        self.receivers = {"acq": Receiver(self.acq_sub), "inbox": Receiver(self.inbox), "model": Receiver(self.model)}
        self.poller = zmq.Poller()
        for s in (self.acq_sub, self.inbox, self.model):
            self.poller.register(s, zmq.POLLIN)

        self.record = SpikeRecord(n_neurons)
        self.streams: dict[str, StreamState] = {}
        self.last_seen: dict[str, float] = {}
        self.trial_reports: dict[int, m.TrialReport] = {}
        self.trial_started_wall: dict[int, float] = {}
        self.trial_ended_wall: dict[int, float] = {}
        self.onsets: dict[int, dict[int, m.OnsetReport]] = {}
        self.acq_onsets: dict[tuple[int, int], float] = {}
        self.model_replies: dict[int, m.ModelReply] = {}
        self.presented: dict[int, m.TrialPlan] = {}  # sent to the presenter, responses not yet collected
        self.plan_requests: dict[int, dict] = {}
        self.request_id = 0
        self.model_version_seen = -1
        self.latencies_s: list[float] = []
        self.plans_on_time = 0
        self.plans_late = 0
        self.gaps: list[tuple[float, float]] = []
        self.last_collected_wall: float | None = None
        self.presenter_info: dict = {}

    # -- message handling ------------------------------------------------------
    def pump(self, timeout_ms: float) -> None:
        """Receive and handle everything waiting (waiting up to timeout_ms for the first)."""
        events = dict(self.poller.poll(timeout_ms))
        if self.acq_sub in events:
            while (msg := self.receivers["acq"].recv()) is not None:
                self._on_acquisition(msg)
        if self.inbox in events:
            while (msg := self.receivers["inbox"].recv()) is not None:
                self._on_inbox(msg)
        if self.model in events:
            while (msg := self.receivers["model"].recv()) is not None:
                self._on_model(msg)

    def _on_acquisition(self, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, m.SpikeBatch):
            self.last_seen["cortex"] = now
            st = self.streams.setdefault(msg.stream, StreamState())
            self.store.put_spikes(msg)
            if st.last_seq is not None and msg.seq != st.last_seq + 1:
                lost = msg.total_spikes - len(msg.neuron) - st.last_total
                st.lost_batches += msg.seq - st.last_seq - 1
                st.lost_spikes += max(lost, 0)
                st.lost_intervals.append((self.record.clock_s, msg.t_start_s))
                self.store.log("spikes_lost", f"stream {msg.stream}: batches {st.last_seq + 1}..{msg.seq - 1} "
                                              f"({lost} spikes) lost")
            st.last_seq, st.last_total = msg.seq, msg.total_spikes
            st.received_spikes += len(msg.neuron)
            try:
                self.record.add(msg.neuron, msg.time_s, msg.t_end_s)
            except ValueError as err:
                self.store.log("bad_spikes", f"stream {msg.stream} seq {msg.seq}: {err}")
        elif isinstance(msg, m.EventCode):
            self.last_seen["cortex"] = now
            self.store.put_event(msg)
            if msg.code == m.Codes.IMAGE_ONSET and msg.clock == "acquisition":
                self.acq_onsets[(msg.trial_id, msg.index)] = msg.time_s
        elif isinstance(msg, m.Heartbeat):
            self.last_seen[msg.role] = now
            if msg.stream:
                self.record.advance(msg.clock_s)

    def _on_inbox(self, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, m.OnsetReport):
            self.last_seen["presenter"] = now
            self.store.put_onset(msg)
            self.onsets.setdefault(msg.trial_id, {})[msg.index] = msg
        elif isinstance(msg, m.TrialReport):
            self.last_seen["presenter"] = now
            if msg.status == "started":
                self.trial_started_wall[msg.trial_id] = now
                return
            self.store.put_trial(msg)
            if msg.status == "gap":
                self.gaps.append((msg.start_s, msg.end_s))
                return
            self.trial_reports[msg.trial_id] = msg
            self.trial_ended_wall[msg.trial_id] = now
        elif isinstance(msg, m.Heartbeat):
            self.last_seen[msg.role] = now
            if msg.info:
                self.presenter_info = msg.info

    def _on_model(self, msg) -> None:
        self.last_seen["model"] = time.monotonic()
        if not isinstance(msg, m.ModelReply):
            return
        if msg.op == "plan":
            req = self.plan_requests.get(msg.trial_id)
            if req is not None and req["id"] == msg.request_id:
                req["ready_wall"] = time.monotonic()
                self.model_replies[msg.trial_id] = msg
        else:
            self.model_replies[-msg.request_id] = msg  # predictions and status, keyed by request
        if msg.model_version != self.model_version_seen:
            self.model_version_seen = msg.model_version
            self.store.put_model_version(msg.model_version, msg.trial_id, msg.info)

    def _check_alive(self) -> None:
        now = time.monotonic()
        for role in ("cortex", "presenter"):
            seen = self.last_seen.get(role)
            if seen is not None and now - seen > self.DEAD_AFTER_S:
                raise SessionAbort(f"{role} silent for {now - seen:.1f} s")

    def wait_for(self, cond, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05) * 1000)
            self._check_alive()
        return True

    # -- start-up ----------------------------------------------------------------
    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        """All processes answer before the first plan is sent (the SUB socket is live once a heartbeat came)."""
        rid = self._model_request("status")
        ok = self.wait_for(lambda: "cortex" in self.last_seen and "presenter" in self.last_seen, timeout_s)
        if not ok:
            missing = [r for r in ("cortex", "presenter") if r not in self.last_seen]
            raise SessionAbort(f"no heartbeat from {', '.join(missing)} within {timeout_s:.0f} s")
        if not self.wait_for(lambda: -rid in self.model_replies, 15.0):
            self.store.log("model", "model worker not answering at start; pool images until it does")

    # -- commands ------------------------------------------------------------------
    def _model_request(self, op: str, **kw) -> int:
        self.request_id += 1
        m.send(self.model, m.ModelRequest(request_id=self.request_id, op=op, **kw), zmq.NOBLOCK)
        return self.request_id

    def request_plan(self, cmd: p.RequestPlan) -> None:
        steps = self.rig.model.steps_per_trial if self.virtual else 0
        try:
            rid = self._model_request("plan", trial_id=cmd.trial_id, n_images=self.rig.trial.images_per_trial,
                                      train_steps=steps)
        except zmq.Again:
            rid = -1
        self.plan_requests[cmd.trial_id] = {"id": rid, "sent_wall": time.monotonic(),
                                            "trigger_wall": self.last_collected_wall}

    def _deadline(self, trial_id: int) -> float | None:
        """Wall time by which the plan for trial_id must be sent; None while it cannot be known yet."""
        if self.virtual or trial_id == 0:
            return self.plan_requests[trial_id]["sent_wall"] + self.rig.trial.virtual_plan_timeout_s
        prev = trial_id - 1
        if prev in self.trial_ended_wall:  # the presenter is already idle: it is late now
            return self.trial_ended_wall[prev]
        if prev in self.trial_started_wall:
            return self.trial_started_wall[prev] + self.trial_s - self.rig.trial.plan_margin_ms / 1000
        return None

    def take_plan(self, cmd: p.TakePlan) -> PlannedTrial:
        n = self.rig.trial.images_per_trial
        while True:
            reply = self.model_replies.pop(cmd.trial_id, None)
            if reply is not None:
                break
            deadline = self._deadline(cmd.trial_id)
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.pump(5)
            self._check_alive()
        req = self.plan_requests.get(cmd.trial_id, {})
        chosen = list(cmd.requeued[:n])
        if reply is not None and len(reply.image_hashes) >= n - len(chosen):
            self.plans_on_time += 1
            if req.get("trigger_wall") is not None:
                # From the moment the request could be made (its trial's window complete, or the trial that
                # freed its place aborted) to the plan being ready.
                latency = req["ready_wall"] - max(req["trigger_wall"], req["sent_wall"])
                self.latencies_s.append(latency)
                if latency > 0.5 * self.trial_s:
                    self.store.log("slow_plan", f"trial {cmd.trial_id}: plan ready {latency * 1000:.0f} ms after "
                                                f"the response window it follows")
            k = n - len(chosen)
            chosen += list(zip(reply.image_hashes[:k], reply.pixels[:k], reply.reasons[:k]))
            source, version = "model", reply.model_version
        else:
            self.plans_late += 1
            self.store.log("plan_late", f"trial {cmd.trial_id}: model plan not ready in time; pool images used")
            idx = self.rng.choice(len(self.pools.train), n - len(chosen), replace=False)
            chosen += [(image_hash(self.pools.train[i]), self.pools.train[i], f"pool fallback (model late) pool#{i}")
                       for i in idx]
            source, version = "pool", -1
        msg = m.TrialPlan(trial_id=cmd.trial_id, image_hashes=[c[0] for c in chosen], refresh_hz=self.rig.display.refresh_hz,
                          model_version=version, source=source, reasons=[c[2] for c in chosen],
                          pixels=np.stack([c[1] for c in chosen]), **self.frames)
        return PlannedTrial(msg, n_requeued=min(len(cmd.requeued), n))

    def present(self, cmd: p.Present) -> None:
        self.store.put_plan(cmd.plan.msg)  # stored before it is used
        self.presented[cmd.plan.msg.trial_id] = cmd.plan.msg
        m.send(self.plans_out, cmd.plan.msg)

    def await_trial(self, cmd: p.AwaitTrial) -> m.TrialReport:
        ok = self.wait_for(lambda: cmd.trial_id in self.trial_reports, max(60.0, 20 * self.trial_s))
        if not ok:
            raise SessionAbort(f"trial {cmd.trial_id}: no report from the presenter")
        report = self.trial_reports[cmd.trial_id]
        if report.status != "done":
            self.presented.pop(cmd.trial_id, None)  # no responses will be collected from it
        return report

    def collect(self, cmd: p.CollectResponses) -> dict:
        tid = cmd.trial_id
        report = self.trial_reports[tid]
        # Every onset's report and its event code as recorded by the acquisition system.
        indices = list(range(report.n_onsets))
        self.wait_for(lambda: len(self.onsets.get(tid, {})) >= report.n_onsets
                      and all((tid, i) in self.acq_onsets for i in indices), 5.0)
        onset_acq = np.array([self._acq_time(tid, i) for i in indices])
        starts, ends = onset_acq + self.window[0], onset_acq + self.window[1]
        last_end = float(ends.max()) if len(ends) else -np.inf
        if not self.wait_for(lambda: self.record.complete(last_end), max(30.0, 5 * self.trial_s)):
            raise SessionAbort(f"trial {tid}: acquisition clock stopped before the response window ended")
        self.last_collected_wall = time.monotonic()
        counts = self.record.counts(starts, ends)
        plan = self.presented[tid]
        rows = []
        for i in indices:
            lost = any(a < ends[i] and starts[i] < b for st in self.streams.values() for a, b in st.lost_intervals)
            onset = self.onsets[tid][i]
            rows.append(dict(trial_id=tid, idx=i, image_hash=onset.image_hash, onset_acq_s=float(onset_acq[i]),
                             window_start_s=float(starts[i]), window_end_s=float(ends[i]), counts=counts[i],
                             valid=not lost, model_version=plan.model_version, source=plan.source,
                             reason=plan.reasons[i]))
        self.store.put_responses(rows)
        if len(onset_acq):
            self.record.forget_before(float(onset_acq.min()))
        return {"trial_id": tid, "rows": rows}

    def _acq_time(self, tid: int, i: int) -> float:
        if (tid, i) in self.acq_onsets:
            return self.acq_onsets[(tid, i)]
        # The event code was lost: map the flip time through the fitted clock.
        fit = self.clock_fit()
        self.store.log("event_missing", f"trial {tid} image {i}: no recorded event code; onset mapped by clock fit")
        return float(fit.to_acquisition(self.onsets[tid][i].flip_s))

    def update_model(self, cmd: p.UpdateModel) -> None:
        plan = self.presented.pop(cmd.responses["trial_id"])
        rows = [r for r in cmd.responses["rows"] if r["valid"]]
        if not rows:
            return
        pixels = np.stack([plan.pixels[r["idx"]] for r in rows])
        msg = m.ResponsesUpdate(trial_id=plan.trial_id, image_hashes=[r["image_hash"] for r in rows],
                                pixels=pixels, counts=np.stack([r["counts"] for r in rows]).astype(np.float32))
        try:
            m.send(self.model, msg, zmq.NOBLOCK)
        except zmq.Again:
            self.store.log("model", f"trial {msg.trial_id}: model worker not accepting responses")

    # -- the run -------------------------------------------------------------------
    def run(self, protocol) -> p.Finish:
        handlers = {p.RequestPlan: self.request_plan, p.TakePlan: self.take_plan, p.Present: self.present,
                    p.AwaitTrial: self.await_trial, p.CollectResponses: self.collect, p.UpdateModel: self.update_model}
        result = None
        try:
            while True:
                cmd = protocol.send(result)
                result = handlers[type(cmd)](cmd)
        except StopIteration as stop:
            return stop.value

    def clock_fit(self):
        pairs = [(o.flip_s, self.acq_onsets[(t, i)]) for t, d in self.onsets.items() for i, o in d.items()
                 if (t, i) in self.acq_onsets]
        if not pairs:
            return None
        a = np.array(pairs)
        return fit_clock(a[:, 0], a[:, 1])

    def predict(self, pixels: np.ndarray, timeout_s: float = 60.0) -> m.ModelReply | None:
        try:
            rid = self._model_request("predict", pixels=pixels)
        except zmq.Again:
            return None
        if self.wait_for(lambda: -rid in self.model_replies, timeout_s):
            return self.model_replies.pop(-rid)
        return None

    def model_status(self, timeout_s: float = 10.0) -> dict:
        try:
            rid = self._model_request("status")
        except zmq.Again:
            return {}
        if self.wait_for(lambda: -rid in self.model_replies, timeout_s):
            return self.model_replies.pop(-rid).info
        return {}

    def shutdown_peers(self, reason: str) -> None:
        for sock in (self.plans_out, self.events_out, self.model):
            try:
                m.send(sock, m.Shutdown(reason), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def close(self) -> None:
        for s in (self.acq_sub, self.inbox, self.plans_out, self.events_out, self.model):
            s.close(linger=500)
