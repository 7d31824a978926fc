"""The model worker process: the ModelWorker part behind a ROUTER socket.

Requests (plan, predict, status) are answered at once to the peer that asked;
responses are learned from. See models/worker.py for how training is
budgeted on each clock.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq

from contract import messages as m
from controller.clocks import make_clock
from controller.config import RigConfig
from models.worker import ModelWorker, prepare_model_process
from transport.links import Receiver, bind, parent_alive
from transport.security import keys_for
from transport.zmq_parts import image_context, limit_for


class ModelWorkerService:
    """The model worker process's loop: `run()` until a Shutdown or the launcher is gone, then `close()`."""

    def __init__(
        self,
        rig: RigConfig,
        endpoints: dict[str, str],
        ctx: zmq.Context | None = None,
        parent_pid: int | None = None,
        session_dir=None,
    ):
        self.parent_pid = parent_pid
        prepare_model_process()
        if hasattr(os, "nice"):
            os.nice(5)  # yield to the rig's own processes: a slow model only makes plans late
        checkpoints = None if session_dir is None else Path(session_dir) / "checkpoints"
        self.worker = ModelWorker(rig, make_clock(rig.session.speed), checkpoint_dir=checkpoints)
        ctx = ctx or zmq.Context.instance()
        self.sock = limit_for(ctx.socket(zmq.ROUTER), "model", rig)
        self.sock.setsockopt(zmq.LINGER, 1000)
        bind(self.sock, "model", endpoints["model"], keys_for(rig))
        self.receiver = Receiver(self.sock, routed=True, context=image_context(rig))
        self.stopping = False

    def handle(self, identity: bytes, msg) -> None:
        if isinstance(msg, m.Shutdown):
            self.stopping = True
        elif isinstance(msg, m.ResponsesUpdate):
            self.worker.update(msg)
        elif isinstance(msg, m.ModelRequest):
            self.worker.request(msg)
            for reply in self.worker.poll(0):
                m.send_routed(self.sock, identity, reply)

    def run(self) -> int:
        while not self.stopping and parent_alive(self.parent_pid):
            if self.sock.poll(100):
                while (item := self.receiver.recv()) is not None:
                    self.handle(*item)
        return 0

    def close(self) -> None:
        self.worker.close()
        self.sock.close(linger=1000)
