"""The parts as the controller sees them when they run in other processes: the same messages, over ZeroMQ.

Each wraps one or two sockets and returns decoded messages from `poll`; malformed
ones are counted and dropped (transport/links.py). The processes at the other
end (transport/processes/) wrap the in-process parts: VirtualCortex,
PresenterRunner, ModelWorker. `ZmqEventOutput` is the presenter process's way
of telling the simulated recording system what it showed.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from contract import messages as m
from transport.links import Receiver, bind, connect, limit_socket, socket_limits
from transport.security import keys_for

# Sizes no valid message exceeds, for sockets made before the rig's neuron count is known (it comes from the
# acquisition source once the session starts): the rig file allows at most this many neurons.
MAX_NEURONS = 4096
# Messages one poll takes from a socket: decoding and validating them is work done before the engine's pump
# budget is looked at, so it is bounded here; what is left stays queued in ZeroMQ (up to the socket's HWM).
POLL_LIMIT = 256


def limit_for(sock: zmq.Socket, name: str, rig=None) -> zmq.Socket:
    """Bound the socket's message size and queues for its endpoint (transport.links.socket_limits), from the
    rig where it is given, else from generous defaults; before bind/connect."""
    img = rig.images.shape if rig is not None else (512, 512, 3)
    limit_socket(
        sock,
        *socket_limits(
            name,
            image_shape=img,
            images_per_trial=rig.trial.images_per_trial if rig is not None else 100,
            n_neurons=MAX_NEURONS,
            predict_images=rig.images.test_size if rig is not None else 10_000,
            ensemble_size=rig.model.ensemble_size if rig is not None else 32,
        ),
    )
    return sock


def image_context(rig) -> dict | None:
    """What a receiver checks of images beyond their own validity: that they have the rig's shape."""
    if rig is None:
        return None
    return {"image_shape": rig.images.shape}


def tell_session_over(sock: zmq.Socket) -> None:
    """Tell the process at the other end that the session is over; a peer that is gone or full is not waited for."""
    try:
        m.send(sock, m.Shutdown("session over"), zmq.NOBLOCK)
    except zmq.ZMQError:
        pass


def _drain(receiver: Receiver, sock: zmq.Socket, timeout_s: float, limit: int = POLL_LIMIT) -> list:
    """What is waiting on sock (waiting up to timeout_s for the first), at most `limit` messages."""
    if timeout_s > 0 and not sock.poll(timeout_s * 1000):
        return []
    return receiver.recv_many(limit)


class ZmqAcquisitionSource:
    """Subscribes to an acquisition stream (the virtual cortex process, a replay process)."""

    def __init__(self, endpoints: dict[str, str], ctx: zmq.Context | None = None, rig=None):
        ctx = ctx or zmq.Context.instance()
        self.sub = limit_for(ctx.socket(zmq.SUB), "acquisition_pub", rig)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        keys = keys_for(rig)
        connect(self.sub, "acquisition_pub", endpoints["acquisition_pub"], keys)
        self.control = ctx.socket(zmq.PUSH)  # to the simulated recording system, for Shutdown only
        self.control.setsockopt(zmq.LINGER, 1000)
        connect(self.control, "acquisition_events", endpoints["acquisition_events"], keys)
        self.receiver = Receiver(self.sub, context={"roles": ("cortex",)})
        self.pending: list = []
        self.info: dict = {}

    def describe(self, timeout_s: float = 60.0) -> dict:
        """Waits for the stream's first heartbeat, which carries its description (the SUB socket is live then)."""
        end = time.monotonic() + timeout_s
        while not self.info and time.monotonic() < end:
            for msg in _drain(self.receiver, self.sub, 0.1):
                self.pending.append(msg)
                if isinstance(msg, m.Heartbeat) and msg.info.get("n_neurons") is not None:
                    self.info = dict(msg.info)
        return self.info

    def poll(self, timeout_s: float = 0.0) -> list:
        out, self.pending = self.pending, []
        return out + _drain(self.receiver, self.sub, 0 if out else timeout_s)

    def waitables(self) -> list:
        return [self.sub]

    def malformed(self) -> int:
        return self.receiver.malformed

    def counters(self) -> dict:
        return {"malformed_messages": self.receiver.malformed, "last_malformed": self.receiver.last_error}

    def close(self) -> None:
        tell_session_over(self.control)
        self.sub.close(linger=0)
        self.control.close(linger=500)


class ZmqPresenter:
    """Plans out to the presenter process; onsets, trial reports and heartbeats back on the inbox."""

    def __init__(self, endpoints: dict[str, str], ctx: zmq.Context | None = None, rig=None):
        ctx = ctx or zmq.Context.instance()
        keys = keys_for(rig)
        self.inbox = bind(
            limit_for(ctx.socket(zmq.PULL), "controller_inbox", rig),
            "controller_inbox",
            endpoints["controller_inbox"],
            keys,
        )
        self.plans_out = limit_for(ctx.socket(zmq.PUSH), "presenter_plans", rig)
        self.plans_out.setsockopt(zmq.LINGER, 1000)
        connect(self.plans_out, "presenter_plans", endpoints["presenter_plans"], keys)
        # Only the presenter speaks on this socket: a heartbeat claiming another role is dropped, not believed.
        self.receiver = Receiver(self.inbox, context={"roles": ("presenter",)})

    def submit(self, plan: m.TrialPlan) -> None:
        m.send(self.plans_out, plan)

    def poll(self, timeout_s: float = 0.0) -> list:
        return _drain(self.receiver, self.inbox, timeout_s)

    def waitables(self) -> list:
        return [self.inbox]

    def malformed(self) -> int:
        return self.receiver.malformed

    def close(self) -> None:
        tell_session_over(self.plans_out)
        self.inbox.close(linger=0)
        self.plans_out.close(linger=500)


class ZmqModel:
    """Requests and responses to the model worker process (DEALER); replies come back on the same socket.

    Sending never blocks: a worker that is gone or full raises zmq.Again, and the engine goes on without it."""

    def __init__(self, endpoints: dict[str, str], ctx: zmq.Context | None = None, rig=None):
        ctx = ctx or zmq.Context.instance()
        self.sock = limit_for(ctx.socket(zmq.DEALER), "model", rig)
        self.sock.setsockopt(zmq.LINGER, 1000)
        connect(self.sock, "model", endpoints["model"], keys_for(rig))
        self.receiver = Receiver(self.sock, context=image_context(rig))

    def request(self, req: m.ModelRequest) -> None:
        m.send(self.sock, req, zmq.NOBLOCK)

    def update(self, upd: m.ResponsesUpdate) -> None:
        m.send(self.sock, upd, zmq.NOBLOCK)

    def poll(self, timeout_s: float = 0.0) -> list:
        return _drain(self.receiver, self.sock, timeout_s)

    def waitables(self) -> list:
        return [self.sock]

    def malformed(self) -> int:
        return self.receiver.malformed

    def close(self) -> None:
        tell_session_over(self.sock)
        self.sock.close(linger=500)


class ZmqEventOutput:
    """The simulated rig's event output: each code (and each new image's pixels) to the cortex process."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, rig=None):
        ctx = ctx or zmq.Context.instance()
        self.sock = limit_for(ctx.socket(zmq.PUSH), "acquisition_events", rig)
        self.sock.setsockopt(zmq.LINGER, 2000)
        connect(self.sock, "acquisition_events", endpoint, keys_for(rig))
        self.seq = 0

    def write(self, code: int, time_s: float, trial_id: int, index: int, image_hash: str) -> None:
        self.seq += 1
        m.send(
            self.sock,
            m.EventCode(
                stream="presenter",
                seq=self.seq,
                code=code,
                time_s=time_s,
                clock="presenter",
                trial_id=trial_id,
                index=index,
                image_hash=image_hash,
            ),
        )

    def show(self, image_hash: str, pixels: np.ndarray) -> None:
        m.send(self.sock, m.ScreenImage(image_hash=image_hash, pixels=pixels))

    def close(self) -> None:
        self.sock.close(linger=2000)
