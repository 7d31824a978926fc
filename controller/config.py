"""The rig file: TOML in, one validated, immutable RigConfig out.

Sections belong to the package that uses them (acquisition/config.py,
models/config.py, stimulus/config.py); this module adds the session-level ones
and composes them. Unknown keys, wrong types and out-of-range values are refused
with an error naming the file, the key and why.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, model_validator

from acquisition.config import CortexConfig, RehearsalConfig
from contract.schema import Strict
from models.config import CompressionConfig, ModelConfig
from stimulus.config import DisplayConfig, FixationConfig, ImagesConfig
from stimulus.event_outputs import EventOutputConfig
from stimulus.selection_config import SelectionConfig


class SessionConfig(Strict):
    """The session as a whole: its name, length, speed, where it is stored, and what its NWB export says about it
    (the metadata DANDI checks; the defaults describe the simulated rig, a rig with an animal sets every subject_
    key)."""

    name: str = Field(
        "session",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The session's name: its directory under store_dir is NAME-TIMESTAMP.",
    )
    n_trials: int = Field(100, ge=1, le=1_000_000, description="Trials the session runs (completed trials).")
    speed: Literal["realtime", "max"] = Field(
        "realtime",
        description='"realtime": wall-clock timing, as on a rig. "max": a virtual clock, as fast as the CPU goes '
        "(the simulated rig only).",
    )
    store_dir: str = Field("sessions", description="Directory the session directories are made in.")
    min_free_mb: float | None = Field(
        None,
        ge=0.0,
        le=10_000_000.0,
        description="Free space (MB) the store's disk must have for the session to start; while it runs, a warning "
        "once free space falls below it, and a clean end (status stored, summary written) below a quarter of it "
        "(unset: twice the session's expected store, records/space.py; 0: no check).",
    )
    seed: int = Field(0, ge=0, description="Seed of the controller's own random draws (the pool images it offers).")
    description: str = Field(
        "",
        max_length=2000,
        description='NWB: the session description ("": written from the rig: trials, images, neurons).',
    )
    keywords: list[str] = Field(
        ["closed-loop", "visual cortex", "V4", "stimulus selection", "simulated"],
        max_length=32,
        description="NWB: keywords, each 1 to 64 characters.",
    )
    experimenter: list[str] = Field([], max_length=32, description='NWB: experimenters, each "Last, First".')
    institution: str = Field("", max_length=256, description="NWB: the institution.")
    lab: str = Field("", max_length=256, description="NWB: the lab.")
    subject_id: str = Field(
        "virtual-cortex", min_length=1, max_length=64, description="NWB: the subject's identifier (no slashes)."
    )
    subject_species: str = Field(
        "Macaca mulatta",
        max_length=128,
        description='NWB: a Latin binomial ("Macaca mulatta", "Mus musculus") or an NCBI taxonomy IRI.',
    )
    subject_sex: Literal["M", "F", "O", "U"] = Field("U", description="NWB: male, female, other or unknown.")
    subject_age: str = Field(
        "P0D/",
        max_length=64,
        description='NWB: an ISO 8601 duration ("P7Y", "P30D") or a range ("P5Y/P7Y"; "P90D/": at least 90 days; '
        '"P0D/": not known).',
    )
    subject_description: str = Field(
        "simulated: cortexloop's virtual cortex, a model V4 population; no animal",
        min_length=1,
        max_length=1000,
        description="NWB: a description of the subject.",
    )
    acquisition_sample_rate_hz: float = Field(
        30_000.0,
        ge=100.0,
        le=10_000_000.0,
        description="The acquisition system's sample rate, in Hz: spike and code times fall on its grid. The virtual "
        "cortex records on it; an Open Ephys stream must carry it.",
    )

    @model_validator(mode="after")
    def _nwb_metadata(self) -> "SessionConfig":
        import re

        for k in self.keywords:
            if not 1 <= len(k) <= 64:
                raise ValueError(f"keywords: each keyword must be 1 to 64 characters (got {k!r})")
        for name in self.experimenter:
            if not re.fullmatch(r"[\w\s\-.']{1,64},\s+[\w\s\-.']{1,64}", name):
                raise ValueError(f"experimenter: {name!r} is not in the form 'Last, First' (what DANDI accepts)")
        if "/" in self.subject_id or "\\" in self.subject_id:
            raise ValueError(f"subject_id: {self.subject_id!r} must not contain slashes (DANDI uses it in paths)")
        if not re.fullmatch(
            r"[A-Z][a-z]+ [a-z]+( [a-z]+)?|https?://purl\.obolibrary\.org/obo/NCBITaxon_\d+", self.subject_species
        ):
            raise ValueError(
                f"subject_species: {self.subject_species!r} is neither a Latin binomial such as "
                "'Macaca mulatta' nor an NCBI taxonomy IRI (http://purl.obolibrary.org/obo/NCBITaxon_N)"
            )
        duration = r"P(?=\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?"
        if not re.fullmatch(f"{duration}|{duration}/({duration})?", self.subject_age):
            raise ValueError(
                f"subject_age: {self.subject_age!r} is not an ISO 8601 duration such as 'P7Y' or "
                "'P30D', nor a range such as 'P5Y/P7Y' or 'P90D/'"
            )
        return self


class TrialConfig(Strict):
    """One trial: fixation, then images_per_trial images each shown on_ms and followed by off_ms, then the
    inter-trial interval; and how far ahead the controller plans trials. Durations are rounded to whole frames of
    [display] refresh_hz."""

    fixation_ms: float = Field(300.0, ge=0.0, le=10_000.0, description="Fixation before the first image, in ms.")
    images_per_trial: int = Field(5, ge=1, le=100, description="Images shown in a trial.")
    on_ms: float = Field(100.0, gt=0.0, le=10_000.0, description="How long each image is shown, in ms.")
    off_ms: float = Field(100.0, ge=0.0, le=10_000.0, description="Blank after each image, in ms.")
    iti_ms: float = Field(300.0, ge=0.0, le=60_000.0, description="Inter-trial interval, in ms.")
    queue_depth: int = Field(
        2, ge=1, le=16, description="Plans queued at the presenter ahead of the trial being shown."
    )
    plan_margin_ms: float = Field(
        150.0,
        ge=0.0,
        le=10_000.0,
        description="A plan must reach the presenter this long (ms) before its trial starts, or the pool plan is used.",
    )
    virtual_plan_timeout_s: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="On a virtual clock, how long (wall seconds) the controller waits for a plan before it uses the "
        "pool plan, so a dead model worker cannot stall the session.",
    )
    max_frame_error: int = Field(
        3,
        ge=0,
        le=10_000,
        description="An image shown, or the blank after it, more than this many frames longer or shorter than "
        "planned (dropped frames, a stalled screen) was not shown as planned: its response is stored invalid and "
        "the image shown again. In frames of [display] refresh_hz, 0..10000.",
    )


class ResponseConfig(Strict):
    """The response window: the spikes counted as a neuron's response to an image, relative to its onset."""

    window_start_ms: float = Field(
        50.0, ge=0.0, le=5_000.0, description="Start of the response window after image onset, in ms."
    )
    window_end_ms: float = Field(
        200.0,
        gt=0.0,
        le=10_000.0,
        description="End of the response window after image onset, in ms; greater than window_start_ms.",
    )
    max_silence_ms: float = Field(
        1000.0,
        ge=10.0,
        le=60_000.0,
        description="Where only spikes prove a stream live (Open Ephys, LSL): a stretch longer than this (ms) with "
        "no spike of the session's units is a stall, and the responses whose windows it overlaps are stored invalid "
        "and their images shown again. Longer than the population's longest natural quiet, 10..60000.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "ResponseConfig":
        if self.window_end_ms <= self.window_start_ms:
            raise ValueError("window_end_ms must be greater than window_start_ms")
        return self


class EndpointsConfig(Strict):
    """The ZeroMQ endpoints the session's processes bind and connect to. Each is "auto" (an ipc socket in the
    session directory), "off", ipc://PATH, inproc://NAME or tcp://HOST:PORT; tcp off loopback (another host's
    address) needs [security] keys. tcp://*:PORT is refused: the processes that connect use the same address."""

    acquisition_pub: str = Field(
        "auto", description="Virtual cortex PUB: spike batches, event codes, heartbeats (its native stream)."
    )
    acquisition_events: str = Field("auto", description="Virtual cortex PULL: event codes from the presenter.")
    presenter_plans: str = Field("auto", description="Presenter PULL: trial plans from the controller.")
    controller_inbox: str = Field("auto", description="Controller PULL: onset reports and status from the parts.")
    model: str = Field("auto", description="Model worker ROUTER: requests from the controller.")
    openephys_pub: str = Field(
        "auto",
        description="Virtual cortex PUB in the Open Ephys GUI Event Broadcaster's format, so Open Ephys clients can "
        'read the simulated rig ("off": none).',
    )

    @model_validator(mode="after")
    def _transports(self) -> "EndpointsConfig":
        for name, value in self.model_dump().items():
            if value not in ("auto", "off") and not value.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(
                    f'{name} = {value!r}: an endpoint is "auto", "off", tcp://HOST:PORT, '
                    f"ipc://PATH or inproc://NAME (no other transport carries CURVE keys)"
                )
        return self


class SecurityConfig(Strict):
    """CURVE keys (ZeroMQ public-key encryption and authentication) for every socket of the session
    (transport/security.py). Needed where an endpoint is tcp off loopback; used for every socket once set. All three
    keys or none.

    Paths are absolute or start with ~ (the rig is copied into each session directory, where a relative path
    would mean something else). `cortexloop keys DIR` makes a pair: NAME.key (public) and NAME.key_secret."""

    server_key: str = Field(
        "",
        max_length=1000,
        description="The rig's server key pair (NAME.key_secret), which every process that binds a socket serves "
        "with; a machine that only connects may name the public half (NAME.key).",
    )
    client_key: str = Field(
        "",
        max_length=1000,
        description="This machine's own key pair (NAME.key_secret), which its processes connect with.",
    )
    authorized_keys: str = Field(
        "",
        max_length=1000,
        description="A directory of the public keys (NAME.key) of the machines whose processes may connect; no "
        "other key is admitted.",
    )

    @model_validator(mode="after")
    def _all_or_none(self) -> "SecurityConfig":
        given = {k: v for k, v in self.model_dump().items() if v}
        if given and len(given) != 3:
            missing = sorted(set(self.model_dump()) - set(given))
            raise ValueError(
                f"{', '.join(missing)} not set: CURVE needs server_key, client_key and "
                f"authorized_keys together (cortexloop keys DIR makes a pair)"
            )
        for key, value in given.items():
            if not (value.startswith("/") or value.startswith("~")):
                raise ValueError(
                    f"{key} = {value!r}: give an absolute path (or one starting with ~): the rig is "
                    f"copied into each session directory, where a relative path would mean "
                    f"something else"
                )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.server_key)


@dataclass(frozen=True)
class TrialTiming:
    """A trial's durations in whole frames at the display's refresh: computed once, carried in every plan.

    The milliseconds of [trial] are rounded to frames here and nowhere else; the presenter shows exactly
    these frames and every duration the controller reasons with (trial length, deadlines) comes from them."""

    fixation_frames: int
    on_frames: int
    off_frames: int
    iti_frames: int
    images_per_trial: int
    refresh_hz: float

    @property
    def trial_frames(self) -> int:
        return self.fixation_frames + self.images_per_trial * (self.on_frames + self.off_frames) + self.iti_frames

    @property
    def trial_s(self) -> float:
        return self.trial_frames / self.refresh_hz

    def plan_fields(self) -> dict:
        """The TrialPlan fields that carry the timing."""
        return dict(
            fixation_frames=self.fixation_frames,
            on_frames=self.on_frames,
            off_frames=self.off_frames,
            iti_frames=self.iti_frames,
            refresh_hz=self.refresh_hz,
        )


def _stored(info: ValidationInfo) -> bool:
    """Whether the rig is a stored session's, read back (parse_rig stored=True): its values were used, and the
    rules that relate keys to each other are not applied again to it."""
    return bool((info.context or {}).get("stored"))


# A trial duration may be this far (a fraction of a frame) from a whole number of frames of display.refresh_hz.
FRAME_TOLERANCE = 0.1
# Simulated fixation breaks at least this likely per trial are refused: a session stops after 2 x n_trials attempts.
MAX_BREAK_PROBABILITY = 0.5


class RigConfig(Strict):
    """A rig file: every section, each with its defaults."""

    session: SessionConfig = Field(
        SessionConfig(), description="The session: name, length, speed, storage, NWB metadata."
    )
    trial: TrialConfig = Field(TrialConfig(), description="The trial's timing and how far ahead trials are planned.")
    response: ResponseConfig = Field(ResponseConfig(), description="The response window after each image onset.")
    images: ImagesConfig = Field(ImagesConfig(), description="The image pools: where the images come from, how many.")
    display: DisplayConfig = Field(DisplayConfig(), description="The stimulus screen and what is drawn on it.")
    fixation: FixationConfig = Field(FixationConfig(), description='Where "holding fixation" comes from.')
    cortex: CortexConfig = Field(
        CortexConfig(), description="The recording system: the virtual cortex, or a live one (Open Ephys, LSL)."
    )
    model: ModelConfig = Field(ModelConfig(), description="The online model the model worker trains between trials.")
    compression: CompressionConfig = Field(
        CompressionConfig(), description="What `cortexloop compress` distils the online model into."
    )
    selection: SelectionConfig = Field(
        SelectionConfig(), description="Which images are shown: the mix of kinds, objectives, synthesis, hypotheses."
    )
    endpoints: EndpointsConfig = Field(
        EndpointsConfig(), description="The ZeroMQ endpoints of the session's processes."
    )
    security: SecurityConfig = Field(SecurityConfig(), description="CURVE keys for every socket of the session.")
    event_output: EventOutputConfig = Field(
        EventOutputConfig(),
        description='How event codes leave the stimulus machine ("zmq" to the virtual cortex; TTL lines; LSL markers).',
    )
    rehearsal: RehearsalConfig = Field(
        RehearsalConfig(), description="Faults of the simulated recording system, for rehearsal and benchmarks only."
    )

    @model_validator(mode="after")
    def _rehearsal_on_the_simulator(self) -> "RigConfig":
        """Faults are injected by the virtual cortex: a rig whose recording system is a live one cannot have them."""
        faults = self.rehearsal.faults
        if faults and not self.cortex.has_virtual_cortex:
            raise ValueError(
                f"rehearsal: {', '.join(sorted(faults))} set, but the recording system is not the virtual cortex "
                f"(cortex.source = {self.cortex.source!r}, no virtual_cortex): [rehearsal] is for rehearsal and "
                f"benchmarks on the simulated rig only"
            )
        return self

    @model_validator(mode="after")
    def _one_wiring(self) -> "RigConfig":
        """TTL lines are one cable: the stimulus machine's output and the recording system's inputs must agree."""
        out, ttl = self.event_output, self.cortex.ttl
        if out.kind in ("parallel", "serial"):
            for key in ("n_lines", "scheme", "strobe_line", "pulse_ms"):
                if getattr(out, key) != getattr(ttl, key):
                    raise ValueError(
                        f"event_output.{key} = {getattr(out, key)!r} but cortex.ttl.{key} = "
                        f"{getattr(ttl, key)!r}: both ends of the TTL lines must agree"
                    )
        return self

    @model_validator(mode="after")
    def _keys_off_loopback(self, info: ValidationInfo) -> "RigConfig":
        """An endpoint another machine can reach is refused without keys: anyone could connect to it."""
        from transport.security import is_loopback

        if (info.context or {}).get("check_endpoints", True) and not self.security.enabled:
            for name, value in self.endpoints.model_dump().items():
                if value not in ("auto", "off") and not is_loopback(value):
                    raise ValueError(
                        f"endpoints.{name} = {value!r} is not on loopback: another machine could "
                        f"connect. Name CURVE keys under [security] (server_key, client_key, "
                        f'authorized_keys; cortexloop keys DIR makes a pair), or use "auto" (ipc) '
                        f"or tcp://127.0.0.1:PORT on one machine"
                    )
        return self

    @model_validator(mode="after")
    def _durations_in_frames(self, info: ValidationInfo) -> "RigConfig":
        """The screen shows whole frames: a duration that is not one (within FRAME_TOLERANCE of a frame) would be
        shown for another length than the rig file says."""
        if _stored(info):
            return self
        hz = self.display.refresh_hz
        frame_ms = 1000.0 / hz
        for key in ("fixation_ms", "on_ms", "off_ms", "iti_ms"):
            ms = getattr(self.trial, key)
            frames = ms / frame_ms
            least = 1 if key == "on_ms" else 0
            if round(frames) < least or abs(frames - round(frames)) > FRAME_TOLERANCE:
                near = sorted({max(least, math.floor(frames)), max(least, math.ceil(frames))})
                valid = " or ".join(f"{n * frame_ms:.3f} ms ({n} frame{'' if n == 1 else 's'})" for n in near)
                raise ValueError(
                    f"trial.{key} = {ms:g} ms is not a whole number of frames at display.refresh_hz = {hz:g} "
                    f"({frames:.2f} frames of {frame_ms:.3f} ms"
                    + ("; an image is shown for at least one frame" if round(frames) < least else "")
                    + f"): nearest valid values {valid}"
                )
        return self

    @model_validator(mode="after")
    def _window_fits_the_trial(self, info: ValidationInfo) -> "RigConfig":
        """Each image's response window ends before the next image's window starts (no spike is counted for two
        images), and the virtual cortex's neurons answer inside it."""
        if _stored(info):
            return self
        timing, r = self.timing, self.response
        frame_ms = 1000.0 / timing.refresh_hz
        if timing.images_per_trial > 1:
            spacing_ms, what = (timing.on_frames + timing.off_frames) * frame_ms, "trial.on_ms + trial.off_ms"
        else:
            spacing_ms, what = timing.trial_frames * frame_ms, "one image a trial: the whole trial"
        if r.window_end_ms > spacing_ms + r.window_start_ms + 1e-6:
            need_off = r.window_end_ms - r.window_start_ms - spacing_ms + timing.off_frames * frame_ms
            raise ValueError(
                f"response.window_end_ms = {r.window_end_ms:g} with trial.off_ms = {self.trial.off_ms:g} reaches into "
                f"the next image's window: images start "
                f"every {spacing_ms:g} ms ({what}), so a window from {r.window_start_ms:g} ms must end by "
                f"{spacing_ms + r.window_start_ms:g} ms, or spikes are counted for two images. Shorten the window "
                f"or lengthen trial.off_ms (to at least {need_off:g} ms)"
            )
        if self.cortex.has_virtual_cortex:
            low, high = self.cortex.spiking.latency_ms
            if high >= r.window_end_ms:
                raise ValueError(
                    f"cortex.spiking.latency_ms = [{low:g}, {high:g}]: neurons start answering up to {high:g} ms "
                    f"after onset, at or after the response window's end (response.window_end_ms = "
                    f"{r.window_end_ms:g}): their responses would not be counted"
                )
        return self

    @model_validator(mode="after")
    def _pool_and_test(self, info: ValidationInfo) -> "RigConfig":
        """The models learn from the pool and are scored on the test set: a pool smaller than the test set trains
        on fewer images than it is judged by."""
        if _stored(info):
            return self
        i = self.images
        if i.source != "npy" or not i.test_path:
            if i.pool_size < i.test_size:
                raise ValueError(
                    f"images.pool_size = {i.pool_size} is smaller than images.test_size = {i.test_size}: the models "
                    f"would learn from fewer images than they are scored on; raise pool_size or lower test_size"
                )
        return self

    @model_validator(mode="after")
    def _model_and_selection(self, info: ValidationInfo) -> "RigConfig":
        """Kinds of images chosen by the model need a model that learns (on a virtual clock its budget is
        steps_per_trial) and, for objectives that weigh members against each other, more than one member."""
        if _stored(info):
            return self
        mix, sel, model = self.selection.shares(), self.selection, self.model
        chosen = [k for k in ("selected", "synthesized", "mei") if mix.get(k, 0) > 0]
        if chosen and self.session.speed == "max" and model.kind != "baseline" and model.steps_per_trial == 0:
            raise ValueError(
                f'model.steps_per_trial = 0 on a virtual clock (session.speed = "max"): the model never trains, '
                f"yet selection.mix asks it to choose images ({', '.join(chosen)}); give it steps (the default is 20) "
                f"or show random images only"
            )
        needs_members = sel.objective in ("epig", "kl", "disagreement") or (
            sel.objective == "js" and not sel.hypotheses
        )
        uses_objective = [k for k in ("selected", "synthesized") if mix.get(k, 0) > 0]
        if uses_objective and needs_members and model.ensemble_size < 2:
            raise ValueError(
                f"model.ensemble_size = {model.ensemble_size}: selection.objective = {sel.objective!r} weighs "
                f"ensemble members against each other (with one member every image scores the same), and "
                f"selection.mix asks for {', '.join(uses_objective)} images; use at least 2 members"
            )
        return self

    @model_validator(mode="after")
    def _fixation_can_complete(self, info: ValidationInfo) -> "RigConfig":
        """A session gives up after 2 x n_trials attempts: simulated breaks at or above one trial in two would
        end most sessions short."""
        if _stored(info):
            return self
        f = self.fixation
        if f.source == "simulated" and f.break_probability >= MAX_BREAK_PROBABILITY:
            raise ValueError(
                f"fixation.break_probability = {f.break_probability:g}: a session stops after 2 x n_trials "
                f"attempts, so with breaks this often it expects to end short of session.n_trials; use less than "
                f"{MAX_BREAK_PROBABILITY:g}"
            )
        return self

    @model_validator(mode="after")
    def _endpoints_connectable(self, info: ValidationInfo) -> "RigConfig":
        """Every endpoint is bound by one process and connected to by another, with the same address: one that
        names every interface can be bound but not connected to."""
        if _stored(info) or not (info.context or {}).get("check_endpoints", True):
            return self
        named = dict(self.endpoints.model_dump())
        if self.cortex.openephys is not None:
            named["cortex.openephys.endpoint"] = self.cortex.openephys.endpoint
        for name, value in named.items():
            if re.match(r"^tcp://(\*|0\.0\.0\.0|\[::\]|\[\*\]):", value):
                key = name if "." in name else f"endpoints.{name}"
                raise ValueError(
                    f"{key} = {value!r}: a connecting process cannot use an address of every interface (the same "
                    f"address is bound by one process and connected to by the others). Name the address of the "
                    f"machine that binds it, e.g. tcp://192.168.1.20:{value.rsplit(':', 1)[-1]}"
                )
        return self

    @property
    def timing(self) -> TrialTiming:
        t, hz = self.trial, self.display.refresh_hz
        frames = lambda ms: max(0, int(round(ms * hz / 1000)))  # noqa: E731  (whole frames closest to ms)
        return TrialTiming(
            frames(t.fixation_ms), max(1, frames(t.on_ms)), frames(t.off_ms), frames(t.iti_ms), t.images_per_trial, hz
        )

    @property
    def trial_duration_ms(self) -> float:
        """The trial as shown: whole frames (see TrialTiming)."""
        return self.timing.trial_s * 1000


class RigFileError(ValueError):
    """A rig file that cannot be used; the message names the file, the key and why."""


def _format_validation(path: str, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} problem(s) in rig file"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            moved = MOVED_KEYS.get(tuple(str(p) for p in e["loc"]))
            if moved:
                msg = f"moved: this key now belongs under [{moved}] ({moved}.{e['loc'][-1]})"
            else:
                msg = "unknown key (not part of the rig file format)"
        given = e.get("input")
        if e["type"] == "value_error" and isinstance(given, dict):
            # A rule over several keys (a section's validator, or the rig's): its message starts with the key.
            text = msg.removeprefix("Value error, ")
            named = re.match(r"[a-z_]+(\.[a-z_]+)*(?= = |: )", text)
            if named:
                full = named.group(0)
                if e["loc"] and not full.startswith(f"{key}."):
                    full = f"{key}.{full}"
                lines.append(f"  {full}{text[named.end() :]}")
                continue
        given_txt = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {key}: {msg}{given_txt}")
    return "\n".join(lines)


# Keys that rig files once had and no longer do: a session stored before keeps them in its rig, and must still open.
RETIRED_KEYS = {
    ("selection", "window_ms"): "the response window is [response] window_start_ms / window_end_ms, read by every part",
}


# Keys that moved to another section: (old section path..., key) -> the section it belongs under now. A rig file
# with one in its old place is refused with where it goes; a stored session's rig has it moved on reading.
MOVED_KEYS: dict[tuple[str, ...], str] = {
    **{("model", key): "compression" for key in CompressionConfig.model_fields},
    **{("cortex", "recording", key): "rehearsal" for key in RehearsalConfig.model_fields},
}


def _move_keys(data: dict) -> dict:
    """A stored rig with keys in their old places, each moved to the section it belongs under now (a copy)."""
    data = copy.deepcopy(data)
    for (*old, key), new in MOVED_KEYS.items():
        node = data
        for part in old:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            value = node.pop(key)
            target = data.setdefault(new, {})
            if isinstance(target, dict):
                target.setdefault(key, value)
    return data


def parse_rig(
    data: dict, source: str = "<rig>", stored: bool = False, check_endpoints: bool | None = None
) -> RigConfig:
    """A RigConfig from parsed TOML/JSON. stored: a rig read back from a session (a retired key is dropped and a
    moved key moved, not refused: the session was recorded when they were part of the format; its endpoints are not checked for keys:
    it is read, not run, and may have been recorded before keys were required). check_endpoints: whether
    endpoints off loopback without keys are refused (default: unless stored)."""
    data = _move_keys(data) if stored else dict(data)
    for (section, key), why in RETIRED_KEYS.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            if not stored:
                raise RigFileError(f"{source}: 1 problem(s) in rig file\n  {section}.{key}: no longer a key: {why}")
            data[section] = {k: v for k, v in data[section].items() if k != key}
    try:
        return RigConfig.model_validate(
            data,
            context={"check_endpoints": not stored if check_endpoints is None else check_endpoints, "stored": stored},
        )
    except ValidationError as err:
        raise RigFileError(_format_validation(source, err)) from None


def load_rig(path: str | Path) -> RigConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RigFileError(f"{path}: cannot read rig file ({err.strerror})") from None
    if path.suffix == ".json":  # the resolved rig a launcher writes into a session directory
        try:
            data = json.loads(text)
        except ValueError as err:
            raise RigFileError(f"{path}: not valid JSON ({err})") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise RigFileError(f"{path}: not valid TOML ({err})") from None
    return parse_rig(data, str(path))


def _merged(current, override):
    """`override` laid over the values of `current`: into a section (and the sections nested in it) it merges key by
    key; any other value (a number, a list, a table of values such as selection.mix) it replaces."""
    if not (isinstance(current, Strict) and isinstance(override, dict)):
        return override
    return {**current.model_dump(), **{k: _merged(getattr(current, k, None), v) for k, v in override.items()}}


def with_overrides(rig: RigConfig, stored: bool = False, **sections: dict) -> RigConfig:
    """A copy of `rig` with some keys replaced, validated again (used by CLI flags and tests). Nested sections merge
    into the rig's own: cortex={"population": {"n_neurons": 5}} changes n_neurons and keeps population's other keys.
    stored: `rig` is a stored session's (a replay), so the rules across keys that a stored rig is exempt from stay off."""
    data = _merged(rig, sections)
    # `rig` was checked when it was read (or is a stored one, exempt): only new endpoints or keys need it again.
    return parse_rig(
        data, "<overrides>", stored=stored, check_endpoints=bool({"endpoints", "security"} & set(sections))
    )
