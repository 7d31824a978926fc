"""Worlds: which parts a session is plugged into. The engine and the protocol are the same in all of them.

- `process_parts`: the controller's side of a rig whose parts run in their own
  processes (perhaps on other machines) and talk over ZeroMQ: `cortexloop run`.
  Its acquisition part is the one `cortex.source` names (`acquisition_part`):
  the virtual cortex's native stream, or an Open Ephys Event Broadcaster.
- `in_process_parts`: the simulated rig with every part in this process, on the
  rig's clock (a virtual one for benchmarks and tests): the same VirtualCortex,
  PresenterRunner and ModelWorker the processes wrap, without the sockets.
- controller/replay.py: a stored session's stream, presenter reports and plans.

To bring in a new world (an acquisition system, a presenter, a model), write the
one part that differs so that it has the methods of its Protocol in
contract/parts.py, and plug it in beside the others in a SessionParts.
"""

from __future__ import annotations

from acquisition.virtual_cortex import VirtualCortex
from contract.parts import EventOutput, check_part
from controller.clocks import make_clock
from controller.config import RigConfig
from controller.engine import SessionParts
from models.worker import ModelWorker, prepare_model_process
from stimulus.event_outputs import CortexEventOutput
from stimulus.fixation import make_fixation
from stimulus.presenter_part import PresenterRunner
from stimulus.presenters import make_presenter
from transport.security import client_context, keys_for
from transport.zmq_parts import ZmqAcquisitionSource, ZmqModel, ZmqPresenter


def acquisition_part(rig: RigConfig, endpoints: dict[str, str], epoch: int = 0):
    """The acquisition source the rig file names (`cortex.source`), connected to its stream. epoch: how many times
    the session was resumed (records/resume.py: resume_epoch); an LSL recording resumed is a stream of its own.

    "virtual": the virtual cortex process's native stream (acquisition_pub). "openephys": an Open Ephys GUI's
    Event Broadcaster at [cortex.openephys] endpoint ("auto": the simulated rig's openephys_pub, where the virtual
    cortex process publishes it)."""
    cortex = rig.cortex
    if cortex.source == "virtual":
        if "acquisition_pub" not in endpoints:
            raise ValueError(
                'cortex.source = "virtual" reads the native stream, but endpoints.acquisition_pub is "off"'
            )
        return ZmqAcquisitionSource(endpoints, rig=rig)
    if cortex.source == "openephys":
        from acquisition.openephys_source import OpenEphysSource

        oe = cortex.openephys
        endpoint = endpoints.get("openephys_pub") if oe.endpoint == "auto" else oe.endpoint
        if not endpoint:
            raise ValueError(
                'cortex.openephys.endpoint = "auto" means the simulated rig\'s openephys_pub, but '
                'endpoints.openephys_pub is "off"'
            )
        # Only the simulated recording system is told when the session is over; a live one keeps recording.
        control = endpoints.get("acquisition_events") if oe.virtual_cortex else None
        # The simulated rig's own broadcaster uses the rig's keys, if any; an Open Ephys GUI speaks plain ZeroMQ.
        ctx = client_context(keys_for(rig)) if oe.endpoint == "auto" else None
        return OpenEphysSource(
            oe,
            cortex.ttl,
            endpoint,
            rig.session.acquisition_sample_rate_hz,
            make_clock(rig.session.speed),
            ctx=ctx,
            control_endpoint=control,
        )
    if cortex.source == "lsl":
        from acquisition.lsl_source import LslAcquisitionSource

        lsl = cortex.lsl
        return LslAcquisitionSource(
            lsl.spike_stream,
            lsl.code_stream,
            lsl.n_neurons,
            margin_ms=lsl.clock_margin_ms,
            stale_after_s=lsl.stale_after_s,
            epoch=epoch,
        )
    raise ValueError(f"cortex.source {cortex.source!r}: no acquisition part for it")


def process_parts(rig: RigConfig, endpoints: dict[str, str], epoch: int = 0) -> SessionParts:
    """The controller's side of a rig whose parts run in their own processes, reached at `endpoints` (epoch: as
    for acquisition_part)."""
    return SessionParts(
        clock=make_clock(rig.session.speed),
        source=acquisition_part(rig, endpoints, epoch),
        presenter=ZmqPresenter(endpoints, rig=rig),
        model=ZmqModel(endpoints, rig=rig),
        mode="processes",
    )


def in_process_parts(
    rig: RigConfig, population=None, hypotheses=None, screen=None, pools=None, checkpoint_dir=None
) -> SessionParts:
    """The simulated rig in one process. population: a ground truth other than the rig file's (anything
    with n_neurons, baseline_hz and rates(images)); hypotheses: a HypothesisSet for the model part to
    discriminate; screen: a presenter screen other than the rig's (each part gets its own clock, as each
    process would); checkpoint_dir: where the model part keeps its checkpoint (None: nowhere)."""
    cortex = VirtualCortex(rig, make_clock(rig.session.speed), population)
    events = check_part(CortexEventOutput(cortex), EventOutput, "event output")
    clock = make_clock(rig.session.speed)
    screen = screen if screen is not None else make_presenter(rig.display, clock)
    presenter = PresenterRunner(screen, make_fixation(rig.fixation, rig.display), events, clock)
    prepare_model_process()  # the same torch settings as the model process: the same numbers come out
    model = ModelWorker(
        rig, make_clock(rig.session.speed), hypotheses=hypotheses, pools=pools, checkpoint_dir=checkpoint_dir
    )
    return SessionParts(
        clock=make_clock(rig.session.speed), source=cortex, presenter=presenter, model=model, mode="in-process"
    )
