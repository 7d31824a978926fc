"""ZeroMQ endpoints and sockets: resolving "auto" endpoints, size and queue limits, counting-and-dropping receive."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import zmq

from contract import messages
from controller.config import EndpointsConfig
from transport.security import CurveKeys, as_client, as_server, require_keys_off_loopback

ENDPOINT_NAMES = (
    "acquisition_pub",
    "acquisition_events",
    "presenter_plans",
    "controller_inbox",
    "model",
    "openephys_pub",
)


def resolve_endpoints(endpoints: EndpointsConfig, session_dir: Path) -> dict[str, str]:
    """Concrete endpoints; "auto" becomes an ipc socket beside the session (short path: ipc paths max ~100 chars)."""
    out = {}
    sock_dir = Path(session_dir).resolve() / "sockets"
    if len(str(sock_dir)) > 80:
        sock_dir = Path(tempfile.mkdtemp(prefix="cortexloop-"))
    for name in ENDPOINT_NAMES:
        value = getattr(endpoints, name)
        if value == "off":
            continue
        if value == "auto":
            sock_dir.mkdir(parents=True, exist_ok=True)
            sock_dir.chmod(0o700)  # ipc sockets follow the umask: only this user may connect
            value = f"ipc://{sock_dir}/{name}"
        out[name] = value
    return out


# Queue bounds (ZeroMQ high-water marks, in messages) per socket. A full queue blocks a PUSH or DEALER sender
# (they send with NOBLOCK and handle zmq.Again) and drops at a PUB; dropped spike batches show up as a
# sequence gap, counted as lost, never silently. Memory is then bounded by HWM x the largest message.
SOCKET_HWM = {
    "acquisition_pub": 10_000,  # ~3 minutes of 20 ms batches, heartbeats and event codes
    "acquisition_events": 10_000,
    "presenter_plans": 16,  # at most queue_depth (<= 16) plans wait at the presenter
    "controller_inbox": 10_000,
    "model": 1_000,
    "openephys_pub": 100_000,  # one message per spike
}
_HEADER_ALLOWANCE = messages.MAX_HEADER_BYTES  # every message's JSON header frame stays below this


def socket_limits(
    name: str, *, image_shape: tuple, images_per_trial: int, n_neurons: int, predict_images: int, ensemble_size: int
) -> tuple[int, int]:
    """(max_bytes, hwm) for one of ENDPOINT_NAMES, sized from the rig so that no valid message is refused.

    max_bytes bounds every single frame a peer may send (ZeroMQ's MAXMSGSIZE is checked per frame);
    a message carries at most four frames, so it costs at most 4 x max_bytes before it is refused.
    """
    if name not in SOCKET_HWM:
        raise ValueError(f"unknown socket {name!r}; expected one of {sorted(SOCKET_HWM)}")
    h, w, c = image_shape
    image_bytes = h * w * c
    largest_array = {
        "acquisition_pub": 8 * messages.MAX_SPIKES_PER_BATCH,  # spike times of a batch, float64
        "acquisition_events": image_bytes,  # one ScreenImage
        "presenter_plans": images_per_trial * image_bytes,  # one TrialPlan's pixels
        "controller_inbox": 4 * messages.MAX_TRIAL_FRAMES,  # frame intervals of a trial, float32
        # plan and predict pixels (both sides), rates (members, n, neurons) float32 (controller side)
        "model": max(
            max(predict_images, images_per_trial) * image_bytes, 4 * ensemble_size * predict_images * n_neurons
        ),
        "openephys_pub": 0,  # JSON only (acquisition.openephys.MAX_BODY_BYTES is 1 MiB)
    }[name]
    return max(largest_array, _HEADER_ALLOWANCE), SOCKET_HWM[name]


def bind(sock: zmq.Socket, name: str, endpoint: str, keys: CurveKeys | None) -> zmq.Socket:
    """Bind one of the session's sockets (name: its ENDPOINT_NAMES entry). With keys, a CURVE server that admits
    only authorized client keys; without, refused where another machine could reach the endpoint."""
    require_keys_off_loopback(name, endpoint, keys)
    if keys is not None:
        as_server(sock, keys, name)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as err:
        if err.errno == zmq.EADDRINUSE:
            raise EndpointInUse(
                f"endpoints.{name} = {endpoint!r}: address already in use (another session or program holds it). "
                f'Stop it, or give {name} "auto" (an ipc socket in the session directory) or another port'
            ) from None
        raise
    return sock


class EndpointInUse(RuntimeError):
    """A socket of the session could not be bound: its address is taken. The message names the endpoint's key."""


def connect(sock: zmq.Socket, name: str, endpoint: str, keys: CurveKeys | None) -> zmq.Socket:
    """Connect to one of the session's sockets: with keys, as a CURVE client that checks the server's key."""
    require_keys_off_loopback(name, endpoint, keys)
    if keys is not None:
        as_client(sock, keys)
    sock.connect(endpoint)
    return sock


def limit_socket(sock: zmq.Socket, max_bytes: int, hwm: int) -> None:
    """Bound what a socket holds: a peer that sends a frame over max_bytes is disconnected by ZeroMQ before
    the frame is buffered (the socket itself carries on); at most hwm messages queue each way.

    Call before bind/connect: ZeroMQ applies both to connections made afterwards. MAXMSGSIZE applies to
    tcp and ipc transports, not inproc.
    """
    sock.setsockopt(zmq.MAXMSGSIZE, int(max_bytes))
    sock.setsockopt(zmq.RCVHWM, int(hwm))
    sock.setsockopt(zmq.SNDHWM, int(hwm))


class Receiver:
    """Decodes messages from a socket; malformed ones are counted and dropped, never raised.

    context: keyword arguments for messages.check_context (n_neurons, image_shape, roles), so that messages
    that are valid in themselves but not for this rig or this socket are counted and dropped too.
    messages.decode raises nothing but MessageError; any other exception out of it is a bug and is not hidden.
    """

    def __init__(self, sock: zmq.Socket, routed: bool = False, context: dict | None = None):
        self.sock = sock
        self.routed = routed
        self.context = dict(context or {})
        self.malformed = 0
        self.last_error = ""

    def recv(self, flags: int = zmq.NOBLOCK):
        """Returns a message, (identity, message) when routed, or None if nothing valid was waiting."""
        try:
            frames = self.sock.recv_multipart(flags=flags, copy=False)
        except zmq.Again:
            return None
        return self._decode(frames)

    def recv_many(self, limit: int) -> list:
        """Up to `limit` messages that are waiting, without blocking. A malformed one is counted and passed
        over (it counts toward the limit: decoding it was work), so junk cannot hide the valid ones behind it."""
        out = []
        for _ in range(limit):
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg = self._decode(frames)
            if msg is not None:
                out.append(msg)
        return out

    def _decode(self, frames):
        identity = None
        if self.routed:
            identity, frames = bytes(frames[0].buffer), frames[1:]
        try:
            msg = messages.decode(frames)
            if self.context:
                messages.check_context(msg, **self.context)
        except messages.MessageError as err:
            self.malformed += 1
            self.last_error = str(err)
            return None
        return (identity, msg) if self.routed else msg


def parent_alive(parent_pid: int | None) -> bool:
    """A child started by the launcher exits when its launcher is gone (no orphans)."""
    return parent_pid is None or os.getppid() == parent_pid
