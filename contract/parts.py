"""The parts a session is made of (Clock, AcquisitionSource, Presenter, EventOutput, Model), declared once.

One engine (controller/engine.py) runs every world; a world is the choice of parts plugged in
(which part each world uses: docs/architecture.md). The engine uses only the methods declared here,
and parts exchange the messages of contract/messages.py whether in process or behind a socket.

`check_part` refuses, at start-up, an object that lacks a method of its part, naming the part and the method.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Real or virtual time; the one place that knows which (controller/clocks.py)."""

    name: str
    passes_while_waiting: bool

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...

    def stamp(self, reported_s: float) -> float: ...

    def training_budget(self, steps_per_trial: int) -> int | None: ...

    def deadline_in(self, seconds: float) -> float | None: ...


@runtime_checkable
class AcquisitionSource(Protocol):
    """Spikes, event codes and heartbeats, stamped on the acquisition system's own clock.

    poll() returns SpikeBatch, EventCode (clock "acquisition") and Heartbeat messages in the order the
    stream produced them; describe() says what the stream records (at least "n_neurons": the neuron
    count of a session comes from here and nowhere else)."""

    def describe(self, timeout_s: float) -> dict: ...

    def poll(self, timeout_s: float) -> list: ...

    def waitables(self) -> list: ...

    def malformed(self) -> int: ...

    def counters(self) -> dict:
        """What the source received and what it skipped and why (unknown units, foreign events ...), for the
        summary."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Presenter(Protocol):
    """Takes trial plans; reports onsets (stamped at the flip) and trial outcomes.

    poll() returns OnsetReport, TrialReport and Heartbeat messages."""

    def submit(self, plan: Any) -> None: ...

    def poll(self, timeout_s: float) -> list: ...

    def waitables(self) -> list: ...

    def malformed(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class EventOutput(Protocol):
    """How event codes leave the stimulus machine: written at the flip, one word per event.

    `show` tells a simulated recording system what is on screen (a hardware output ignores it)."""

    def write(self, code: int, time_s: float, trial_id: int, index: int, image_hash: str) -> None: ...

    def show(self, image_hash: str, pixels: Any) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Model(Protocol):
    """Chooses images and learns from responses: ModelRequest and ResponsesUpdate in, ModelReply out.

    request() and update() never block; replies come back through poll()."""

    def request(self, req: Any) -> None: ...

    def update(self, upd: Any) -> None: ...

    def poll(self, timeout_s: float) -> list: ...

    def waitables(self) -> list: ...

    def malformed(self) -> int: ...

    def close(self) -> None: ...


class InProcessPart:
    """What every in-process part shares: nothing to wait on (it makes progress when it is polled), no socket
    that could bring malformed messages, nothing to release unless it says otherwise."""

    def waitables(self) -> list:
        return []

    def malformed(self) -> int:
        return 0

    def counters(self) -> dict:
        return {}

    def close(self) -> None:
        pass


# A file in the session directory by which the controller asks the launcher to replace a hung model worker.
MODEL_RESTART_REQUEST = "restart_model"


class SessionAbort(RuntimeError):
    """The session cannot go on (a part needed for recording stopped answering, or a stream cannot be used).

    Any part may raise it; the engine ends the session cleanly with its message as the reason."""


class PartError(TypeError):
    """A part that does not do what its role needs; says which part and which method is missing."""


def check_part(obj: Any, part: type, role: str) -> Any:
    """Return obj if it has every method and attribute of `part`; else raise PartError naming what lacks."""
    names = [n for n in dir(part) if not n.startswith("_")]
    names += [n for n in getattr(part, "__annotations__", {}) if not n.startswith("_")]
    missing = sorted({n for n in names if not hasattr(obj, n)})
    if missing:
        raise PartError(f"{role}: {type(obj).__name__} is not a {part.__name__}: it has no " + ", ".join(missing))
    return obj
