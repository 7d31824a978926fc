"""The model worker process: fits per-neuron models online and chooses the next images.

Answers the controller on a ROUTER socket. In realtime it trains continuously,
one step between socket polls, and answers a plan request at once from its
latest snapshot. On a virtual clock it trains exactly `train_steps` before
answering each plan, so runs are reproducible and every arm gets the same compute.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import torch
import zmq

from controller import messages as m
from controller.config import RigConfig
from controller.links import Receiver, parent_alive
from models.factory import make_online_model
from stimulus.images import image_hash, to_unit_float
from stimulus.pools import make_pools
from stimulus.selection import ImageChooser


def _evidence_tracker(rig: RigConfig, n_members: int):
    try:
        from stimulus.hypotheses import EvidenceTracker
    except ImportError:
        return None
    return EvidenceTracker([f"member{i}" for i in range(n_members)])


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
        self.model = make_online_model(rig.model, n_neurons, self.image_shape)
        self.pools = make_pools(rig.images)
        self.chooser = ImageChooser(rig.selection, self.pools, seed=rig.selection.seed)
        self.evidence = _evidence_tracker(rig, rig.model.ensemble_size)
        self.window_s = (rig.response.window_end_ms - rig.response.window_start_ms) / 1000
        self.snapshot = self.model.snapshot()
        self.have_data = False
        ctx = ctx or zmq.Context.instance()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.bind(endpoints["model"])
        self.receiver = Receiver(self.sock, routed=True)
        self.stopping = False
        self.plans_answered = 0

    def _refresh_snapshot(self) -> None:
        if self.model.version != self.snapshot.version:
            self.snapshot = self.model.snapshot()

    def info(self) -> dict:
        out = {"version": self.model.version, "plans_answered": self.plans_answered,
               "responses": int(len(self.model.buffer)) if hasattr(self.model, "buffer") else None,
               "malformed_dropped": self.receiver.malformed}
        if self.evidence is not None:
            out["evidence"] = self.evidence.report()
        return out

    def handle(self, identity: bytes, msg) -> None:
        if isinstance(msg, m.Shutdown):
            self.stopping = True
        elif isinstance(msg, m.ResponsesUpdate):
            if self.evidence is not None and self.have_data:
                with torch.no_grad():
                    pred = self.snapshot.rates(torch.from_numpy(to_unit_float(msg.pixels)).permute(0, 3, 1, 2))
                self.evidence.update(pred.numpy(), np.asarray(msg.counts), self.window_s)
            self.model.add_responses(np.asarray(msg.pixels), np.asarray(msg.counts), self.window_s)
            self.have_data = True
        elif isinstance(msg, m.ModelRequest):
            m.send_routed(self.sock, identity, self.answer(msg))

    def answer(self, req: m.ModelRequest) -> m.ModelReply:
        if req.op == "plan":
            if not self.realtime and req.train_steps and self.have_data:
                self.model.train(req.train_steps)
            self._refresh_snapshot()
            deadline = None if not self.realtime else time.perf_counter() + 0.5 * self.rig.trial_duration_ms / 1000
            choices = self.chooser.choose(req.trial_id, req.n_images, self.snapshot if self.have_data else None,
                                          deadline)
            pixels = np.stack([c.pixels for c in choices]).astype(np.uint8)
            self.plans_answered += 1
            return m.ModelReply(request_id=req.request_id, op="plan", model_version=self.snapshot.version,
                                trial_id=req.trial_id, image_hashes=[image_hash(px) for px in pixels],
                                reasons=[c.reason for c in choices], pixels=pixels)
        if req.op == "predict":
            self._refresh_snapshot()
            with torch.no_grad():
                x = torch.from_numpy(to_unit_float(req.pixels)).permute(0, 3, 1, 2)
                rates = torch.cat([self.snapshot.rates(x[i:i + 256]) for i in range(0, len(x), 256)], 1)
            return m.ModelReply(request_id=req.request_id, op="predict", model_version=self.snapshot.version,
                                rates=rates.numpy().astype(np.float32))
        return m.ModelReply(request_id=req.request_id, op=req.op, model_version=self.model.version, info=self.info())

    def run(self) -> int:
        while not self.stopping and parent_alive(self.parent_pid):
            busy = self.realtime and self.have_data
            if self.sock.poll(1 if busy else 100):
                while (item := self.receiver.recv()) is not None:
                    self.handle(*item)
            elif busy:
                self.model.train(1)
        return 0

    def close(self) -> None:
        self.sock.close(linger=1000)
