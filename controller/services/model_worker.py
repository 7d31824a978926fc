"""The model worker process: fits per-neuron models online and chooses the next images.

Answers the controller on a ROUTER socket.

realtime: a training thread steps the model continuously and publishes a frozen
snapshot every `SNAPSHOT_EVERY_S`; the socket thread answers each request at
once from the latest snapshot, so a slow training step (or a slow GPU) never
delays a plan: it only makes the model that chose it a little older.
max speed (virtual clock): no thread; before answering each plan the worker
trains exactly `train_steps`, so runs are reproducible and every arm of a
comparison gets the same compute.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import warnings

import numpy as np
import torch
import zmq

from controller import messages as m
from controller.config import RigConfig
from controller.links import Receiver, parent_alive
from models.factory import make_online_model
from stimulus.hypotheses import EvidenceTracker, build_hypotheses
from stimulus.images import image_hash, to_unit_float
from stimulus.pools import make_pools
from stimulus.selection import ImageChooser




class BackgroundTrainer(threading.Thread):
    """Owns the model in realtime mode: new responses in through a queue, snapshots out through `latest`."""

    SNAPSHOT_EVERY_S = 1.0  # a snapshot is one copy of the weights (milliseconds), so this is cheap

    def __init__(self, model, window_s: float):
        super().__init__(name="trainer", daemon=True)
        self.model = model
        self.window_s = window_s
        self.inbox: queue.Queue = queue.Queue()
        self.latest = model.snapshot()
        self.stop = threading.Event()
        self.may_train = threading.Event()  # cleared while a plan is being chosen: choosing comes first
        self.may_train.set()
        self.error: BaseException | None = None
        self._steps_at_snapshot = model.steps_done

    def run(self) -> None:
        try:
            last = time.monotonic()
            while not self.stop.is_set():
                if not self.may_train.wait(timeout=0.1):
                    continue
                got = self._take_new_responses(block=self.model.steps_done == 0)
                before = self.model.steps_done
                self.model.train(1)
                if self.model.steps_done == before and not got:
                    time.sleep(0.01)  # nothing to learn from yet
                if time.monotonic() - last >= self.SNAPSHOT_EVERY_S and self.model.steps_done != self._steps_at_snapshot:
                    self._steps_at_snapshot = self.model.steps_done
                    self.latest = self.model.snapshot()
                    last = time.monotonic()
        except BaseException as err:  # a training failure must not kill the worker: plans go on from `latest`
            self.error = err

    def _take_new_responses(self, block: bool) -> bool:
        got = False
        try:
            while True:
                images, counts = self.inbox.get(timeout=0.05) if block and not got else self.inbox.get_nowait()
                self.model.add_responses(images, counts, self.window_s)
                got = True
        except queue.Empty:
            return got


class ModelWorkerService:
    def __init__(self, rig: RigConfig, endpoints: dict[str, str], n_neurons: int, ctx: zmq.Context | None = None,
                 parent_pid: int | None = None):
        self.rig = rig
        self.realtime = rig.session.speed == "realtime"
        self.parent_pid = parent_pid
        torch.manual_seed(rig.model.seed)
        # Leave a core for the rig's own processes, and yield to them: the model must never slow the
        # presentation (a slow model only makes plans late, and late plans have a fallback).
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        if hasattr(os, "nice"):
            os.nice(5)
        with warnings.catch_warnings():  # numpy notices flushed denormals; that is the point
            warnings.simplefilter("ignore")
            torch.set_flush_denormal(True)
            np.finfo(np.float32), np.finfo(np.float64)
        img = rig.images
        self.image_shape = (img.size_px, img.size_px, 3 if img.colour else 1)
        self.window_s = (rig.response.window_end_ms - rig.response.window_start_ms) / 1000
        self.model = make_online_model(rig.model, n_neurons, self.image_shape)
        self.pools = make_pools(rig.images)
        self.chooser = ImageChooser(rig.selection, self.pools, seed=rig.selection.seed)
        self.n_neurons = n_neurons
        # Hypotheses: the rig file's named ones if it has any (then images are chosen to tell *them* apart),
        # else the ensemble's members. Evidence is the log-likelihood of each new trial's counts under the
        # predictions made before the trial was seen.
        specs = rig.selection.hypotheses
        names = [h.name for h in specs] if specs else [f"member{i}" for i in range(rig.model.ensemble_size)]
        self.evidence = EvidenceTracker(names)
        self.trainer = BackgroundTrainer(self.model, self.window_s) if self.realtime else None
        self._snapshot = self.model.snapshot()
        self._steps_at_snapshot = self.model.steps_done
        self.n_responses = 0
        ctx = ctx or zmq.Context.instance()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.bind(endpoints["model"])
        self.receiver = Receiver(self.sock, routed=True)
        self.stopping = False
        self.plans_answered = 0

    @property
    def has_data(self) -> bool:
        return self.n_responses > 0

    def snapshot(self):
        """The newest frozen model: the trainer's (realtime) or a fresh one after training (virtual clock)."""
        if self.trainer is not None:
            return self.trainer.latest
        if self.model.steps_done != self._steps_at_snapshot:
            self._snapshot = self.model.snapshot()
            self._steps_at_snapshot = self.model.steps_done
        return self._snapshot

    def hypotheses(self, snap):
        """What selection discriminates and evidence weighs: the named hypotheses, or the ensemble itself."""
        if self.rig.selection.hypotheses:
            return build_hypotheses(self.rig.selection.hypotheses, self.n_neurons, snap)
        return snap

    def info(self) -> dict:
        out = {"version": self.snapshot().version, "plans_answered": self.plans_answered,
               "responses": self.n_responses, "training_steps": int(self.model.steps_done),
               "malformed_dropped": self.receiver.malformed}
        if self.trainer is not None and self.trainer.error is not None:
            out["training_error"] = repr(self.trainer.error)
        out["evidence"] = self.evidence.report()
        return out

    def handle(self, identity: bytes, msg) -> None:
        if isinstance(msg, m.Shutdown):
            self.stopping = True
        elif isinstance(msg, m.ResponsesUpdate):
            pixels, counts = np.array(msg.pixels), np.array(msg.counts)
            if self.has_data or self.rig.selection.hypotheses:
                with torch.no_grad():
                    x = torch.from_numpy(to_unit_float(pixels)).permute(0, 3, 1, 2)
                    pred = self.hypotheses(self.snapshot()).rates(x)
                self.evidence.update(pred.numpy(), counts, self.window_s)
            if self.trainer is not None:
                self.trainer.inbox.put((pixels, counts))
            else:
                self.model.add_responses(pixels, counts, self.window_s)
            self.n_responses += len(pixels)
        elif isinstance(msg, m.ModelRequest):
            m.send_routed(self.sock, identity, self.answer(msg))

    def answer(self, req: m.ModelRequest) -> m.ModelReply:
        if req.op == "plan":
            if self.trainer is None and req.train_steps and self.has_data:
                self.model.train(req.train_steps)
            snap = self.snapshot()
            # The plan is due at the presenter about one trial after this request (queue depth 2); answer well
            # within that, so a slow choice (a loaded CPU) costs image quality, not a late plan.
            deadline = None if not self.realtime else time.perf_counter() + 0.4 * self.rig.trial_duration_ms / 1000
            if self.rig.selection.hypotheses:
                target = self.hypotheses(snap)
                self.chooser.set_hypothesis_weights(self.evidence.posterior())
            else:
                target = snap if self.has_data else None
            if self.trainer is not None:
                self.trainer.may_train.clear()
            try:
                choices = self.chooser.choose(req.trial_id, req.n_images, target, deadline)
            finally:
                if self.trainer is not None:
                    self.trainer.may_train.set()
            pixels = np.stack([c.pixels for c in choices]).astype(np.uint8)
            self.plans_answered += 1
            return m.ModelReply(request_id=req.request_id, op="plan", model_version=snap.version,
                                trial_id=req.trial_id, image_hashes=[image_hash(px) for px in pixels],
                                reasons=[c.reason for c in choices], pixels=pixels)
        if req.op == "predict":
            snap = self.snapshot()
            with torch.no_grad():
                x = torch.from_numpy(to_unit_float(req.pixels)).permute(0, 3, 1, 2)
                rates = torch.cat([snap.rates(x[i:i + 256]) for i in range(0, len(x), 256)], 1)
            return m.ModelReply(request_id=req.request_id, op="predict", model_version=snap.version,
                                rates=rates.numpy().astype(np.float32))
        return m.ModelReply(request_id=req.request_id, op=req.op, model_version=self.snapshot().version,
                            info=self.info())

    def run(self) -> int:
        if self.trainer is not None:
            self.trainer.start()
        while not self.stopping and parent_alive(self.parent_pid):
            if self.sock.poll(100):
                while (item := self.receiver.recv()) is not None:
                    self.handle(*item)
        return 0

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.stop.set()
            self.trainer.join(timeout=30)
        self.sock.close(linger=1000)
