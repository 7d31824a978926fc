"""ZeroMQ endpoints and sockets: resolving "auto" endpoints, and counting-and-dropping receive."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import zmq

from controller import messages
from controller.config import EndpointsConfig

ENDPOINT_NAMES = ("acquisition_pub", "acquisition_events", "presenter_plans", "controller_inbox", "model",
                  "openephys_pub")


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
            value = f"ipc://{sock_dir}/{name}"
        out[name] = value
    return out


class Receiver:
    """Decodes messages from a socket; malformed ones are counted and dropped, never raised."""

    def __init__(self, sock: zmq.Socket, routed: bool = False):
        self.sock = sock
        self.routed = routed
        self.malformed = 0
        self.last_error = ""

    def recv(self, flags: int = zmq.NOBLOCK):
        """Returns a message, (identity, message) when routed, or None if nothing valid was waiting."""
        try:
            frames = self.sock.recv_multipart(flags=flags, copy=False)
        except zmq.Again:
            return None
        identity = None
        if self.routed:
            identity, frames = bytes(frames[0].buffer), frames[1:]
        try:
            msg = messages.decode(frames)
        except messages.MessageError as err:
            self.malformed += 1
            self.last_error = str(err)
            return None
        return (identity, msg) if self.routed else msg


def parent_alive(parent_pid: int | None) -> bool:
    """A child started by the launcher exits when its launcher is gone (no orphans)."""
    return parent_pid is None or os.getppid() == parent_pid
