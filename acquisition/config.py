"""Rig-file sections owned by acquisition: the virtual cortex and the recording system.

Every number is bounded and carries its unit in its name. Unknown keys are refused.
See docs/virtual-cortex.md for what each key does to the simulated neurons.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.schema import Strict

# The built-in neuron types of the virtual cortex (acquisition/neurons.py); the last three are selective.
NEURON_TYPES = (
    "oriented",
    "curvature",
    "dot",
    "texture",
    "colour",
    "cnn",
    "conjunction",
    "sparse_curvature",
    "sparse_texture",
)
SELECTIVE_TYPES = ("conjunction", "sparse_curvature", "sparse_texture")


def _ordered_pair(v: tuple[float, float], name: str) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"{name}: the first value (low) must not exceed the second (high)")
    return v


class PopulationConfig(Strict):
    """Which ground-truth neurons the virtual cortex holds: built-in neuron types drawn by share, and custom ones.
    Each pair of values is (low, high): every neuron draws its own value in that range."""

    n_neurons: int = Field(
        30, ge=0, le=2000, description="Built-in neurons, drawn from type_shares; neurons of `custom` come in addition."
    )
    seed: int = Field(0, ge=0, description="Seed of the population (types, tuning, receptive fields) and its spikes.")
    type_shares: dict[str, float] = Field(
        default_factory=lambda: {
            "oriented": 0.25,
            "curvature": 0.2,
            "dot": 0.1,
            "texture": 0.15,
            "colour": 0.15,
            "cnn": 0.15,
        },
        description="Share of each built-in neuron type (oriented, curvature, dot, texture, colour, cnn, and the "
        "selective conjunction, sparse_curvature, sparse_texture), normalised to sum to one; non-negative.",
    )
    sparseness: float = Field(
        0.03,
        gt=0.0,
        le=0.5,
        description="Selective types (conjunction, sparse_curvature, sparse_texture): the share of natural "
        "calibration patches above each unit's threshold, in (0, 0.5]; below it the unit stays at baseline. The "
        "share of natural pool images that drive a neuron above half its maximum is reported per neuron on the "
        "cortex sheet and per neuron type by `bench efficiency`.",
    )
    baseline_hz: tuple[float, float] = Field(
        (2.0, 10.0), description="Range of the neurons' spontaneous rates, in spikes/s, within [0, 200]."
    )
    peak_hz: tuple[float, float] = Field(
        (20.0, 100.0),
        description="Range of the rates an optimal stimulus reaches, in spikes/s: above baseline_hz, at most 500.",
    )
    rf_size_frac: tuple[float, float] = Field(
        (0.25, 0.5),
        description="Range of receptive field diameters, as a fraction of the image side, within [0.05, 1].",
    )
    normalization_strength: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="Divisive normalization: weight of the population's mean drive in each neuron's denominator.",
    )
    semi_saturation: float = Field(
        0.6,
        gt=0.0,
        le=10.0,
        description="Drive at which a neuron reaches half its evoked range (1.0: the drive of the 95th-percentile "
        "natural patch).",
    )
    suppression: tuple[float, float] = Field(
        (0.0, 0.6),
        description="Range of the neurons' suppression index, within [0, 1]: how far a strongly driven population "
        "or an anti-preferred stimulus pushes the rate below baseline (0: never, 1: to zero).",
    )
    calibration_images: int = Field(
        256, ge=16, le=10000, description="Natural patches every neuron's gain is calibrated on."
    )
    custom: list[str] = Field(
        default_factory=list,
        max_length=64,
        description='Custom ground-truth neuron types, each "package.module:function": a function from an image '
        "batch (B, H, W, C float32 in [0, 1]) to rates (B, n) in spikes/s.",
    )

    @field_validator("custom")
    @classmethod
    def _import_paths(cls, v: list[str]) -> list[str]:
        import re

        for path in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*", path):
                raise ValueError(f'custom neuron type {path!r} must look like "package.module:function"')
        return v

    @field_validator("type_shares")
    @classmethod
    def _known_types(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(NEURON_TYPES))
        if unknown:
            raise ValueError(f"unknown neuron type(s) {unknown}; known: {list(NEURON_TYPES)}")
        if any(s < 0 for s in v.values()):
            raise ValueError("type shares must be non-negative")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PopulationConfig":
        _ordered_pair(self.baseline_hz, "baseline_hz")
        _ordered_pair(self.peak_hz, "peak_hz")
        _ordered_pair(self.rf_size_frac, "rf_size_frac")
        _ordered_pair(self.suppression, "suppression")
        if self.baseline_hz[0] < 0 or self.baseline_hz[1] > 200:
            raise ValueError("baseline_hz must lie in [0, 200]")
        if self.peak_hz[1] > 500 or self.peak_hz[0] <= self.baseline_hz[1]:
            raise ValueError("peak_hz must lie above baseline_hz and at most 500")
        if not (0.05 <= self.rf_size_frac[0] and self.rf_size_frac[1] <= 1.0):
            raise ValueError("rf_size_frac must lie in [0.05, 1]")
        if not (0.0 <= self.suppression[0] and self.suppression[1] <= 1.0):
            raise ValueError("suppression must lie in [0, 1]")
        if self.n_neurons > 0 and sum(self.type_shares.values()) <= 0:
            raise ValueError("type_shares must give at least one type a positive share")
        if self.n_neurons == 0 and not self.custom:
            raise ValueError("the population is empty: set n_neurons > 0 or name custom neuron types")
        return self


class SpikingConfig(Strict):
    """How the virtual cortex turns rates into spikes: latency, response time course, variability, drift and lost
    units."""

    latency_ms: tuple[float, float] = Field(
        (50.0, 80.0), description="Range of the neurons' response latencies after onset, in ms, within [0, 1000]."
    )
    response_duration_ms: float = Field(
        150.0, ge=10.0, le=2000.0, description="How long each onset's response lasts, in ms."
    )
    transient_ratio: float = Field(
        2.0, ge=1.0, le=10.0, description="Peak rate of the onset transient relative to the sustained rate."
    )
    transient_tau_ms: float = Field(30.0, ge=1.0, le=1000.0, description="Decay time of the onset transient, in ms.")
    rise_ms: float = Field(5.0, ge=0.1, le=100.0, description="Rise time of the response, in ms.")
    fano_factor: float = Field(
        1.2,
        ge=1.0,
        le=5.0,
        description="Fano factor of the spike count over a response (a gamma-distributed gain per presentation and "
        "neuron on top of Poisson spiking; 1: Poisson).",
    )
    refractory_ms: float = Field(1.5, ge=0.0, le=10.0, description="Absolute refractory period, in ms.")
    gain_drift_sd: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="Slow drift of each neuron's responsiveness over the session: standard deviation of its log gain "
        "(0: none).",
    )
    gain_drift_timescale_s: float = Field(
        600.0, ge=1.0, le=1e6, description="Time scale of the gain drift, in seconds."
    )
    n_lost_neurons: int = Field(
        0, ge=0, le=2000, description="Units lost partway through the session (electrode drift): they stop firing."
    )
    lost_window_s: tuple[float, float] = Field(
        (300.0, 1800.0),
        description="When lost units go: each at a time drawn in this range, in seconds after the start (not "
        "negative).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "SpikingConfig":
        _ordered_pair(self.latency_ms, "latency_ms")
        _ordered_pair(self.lost_window_s, "lost_window_s")
        if self.latency_ms[0] < 0 or self.latency_ms[1] > 1000:
            raise ValueError("latency_ms must lie in [0, 1000]")
        if self.lost_window_s[0] < 0:
            raise ValueError("lost_window_s must not be negative")
        return self


class RecordingConfig(Strict):
    """The simulated recording system (the virtual cortex's): its clock, its batches and heartbeats, and when the
    screen shows what the presenter flipped."""

    clock_offset_s: float = Field(
        12.5, ge=-1e6, le=1e6, description="Offset of the recording clock from the presenter's, in seconds."
    )
    clock_drift_ppm: float = Field(
        20.0,
        ge=-1000.0,
        le=1000.0,
        description="Drift of the recording clock against the presenter's, in parts per million.",
    )
    batch_ms: float = Field(20.0, ge=1.0, le=1000.0, description="Spikes are sent in batches of this span, in ms.")
    heartbeat_ms: float = Field(100.0, ge=10.0, le=10000.0, description="Interval between heartbeats, in ms.")
    photodiode_lag_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="Display lag: the screen shows a flip this long (ms) after it. The neurons see the image then, "
        "and the photodiode ([cortex.ttl] photodiode_line) reports it then.",
    )
    photodiode_jitter_ms: float = Field(
        0.0, ge=0.0, le=1000.0, description="Uniform jitter in [0, this) ms added to photodiode_lag_ms per flip."
    )


class RehearsalConfig(Strict):
    """Faults injected into the simulated recording system, for rehearsal and benchmarks only (bench/faults.py,
    tests): packets lost or reordered, a clock jump, a stream that stops, and a ledger of what the stream carried.
    A rig whose recording system is not the virtual cortex is refused if it sets any of them."""

    packet_loss: float = Field(
        0.0, ge=0.0, le=0.5, description="Share of spike batches the recording system drops (never sent)."
    )
    reorder: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Share of spike batches held back and sent after the next one (out of order, none lost).",
    )
    clock_jump_s: float = Field(
        0.0,
        ge=0.0,
        le=1e4,
        description="The recording clock jumps this far forward, once, at clock_jump_after_s (forward only).",
    )
    clock_jump_after_s: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="When the clock jumps: seconds of the recording clock after its start (unset: never).",
    )
    stop_after_s: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="The recording system stops publishing (spikes, codes, heartbeats, on every socket) after this "
        "many seconds of its clock (unset: never).",
    )
    stall_after_s: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="The recording system stalls after this many seconds of its clock (unset: never): for stall_s "
        "it publishes nothing on any socket, then goes on; what it recorded meanwhile is lost.",
    )
    stall_s: float = Field(
        0.0, ge=0.0, le=3600.0, description="How long the stall of stall_after_s lasts, in seconds of its clock."
    )
    ttl_delay_ms: float = Field(
        0.0,
        ge=0.0,
        le=10_000.0,
        description="The simulated Open Ephys stream sends each TTL event this late (ms of its clock) behind the "
        "spikes of its sample, a word's lines one after the other (each a further ttl_delay_ms / 8 later), as a "
        "GUI that stalls on its TTL channel would (0: in time order).",
    )
    other_ttl_channel_hz: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description='Another TTL channel ("Crossing Detector") on the simulated Open Ephys stream pulses its lines '
        "0 and 1 for 1 ms at this rate (Hz; 0: no other channel); the source must ignore it.",
    )
    ledger: bool = Field(
        False,
        description="One line per spike batch made on the recording system's output (\"ledger STREAM SEQ SPIKES "
        'FATE", fate sent, dropped, delayed or stopped): the ground truth of fault benchmarks.',
    )

    @property
    def faults(self) -> dict:
        """The keys set away from their defaults."""
        defaults = RehearsalConfig()
        return {k: v for k, v in self.model_dump().items() if v != getattr(defaults, k)}


class TtlConfig(Strict):
    """The recording system's digital inputs: how event code words arrive on TTL lines (acquisition/ttl.py).

    Must match the stimulus machine's [event_output], line for line: the same n_lines, scheme, strobe_line
    and pulse_ms."""

    n_lines: int = Field(
        8,
        ge=5,
        le=32,
        description="Lines carrying code words, strobe included (0..n_lines-1; code bit k on the k-th data line). "
        "Codes go up to 31, so at least 5 data lines.",
    )
    scheme: Literal["return_to_zero", "strobe"] = Field(
        "return_to_zero",
        description='"return_to_zero": each word, then all lines to zero after pulse_ms. "strobe": the data lines '
        "and the strobe line rising with them; the word is read at the strobe's rising edge (n_lines at least 6).",
    )
    strobe_line: int | None = Field(
        None, ge=0, le=31, description='scheme "strobe" only: the strobe line, one of the code lines.'
    )
    pulse_ms: float = Field(
        5.0,
        ge=0.05,
        le=100.0,
        description="How long a word holds the lines (and the zero word after it), in ms: codes closer than "
        "2 x pulse_ms are delayed.",
    )
    photodiode_line: int | None = Field(
        None,
        ge=0,
        le=255,
        description="The photodiode's digital line, not one of the code lines; each edge is an onset as the screen "
        "showed it (unset: no photodiode).",
    )

    @model_validator(mode="after")
    def _lines(self) -> "TtlConfig":
        if self.scheme == "strobe":
            if self.strobe_line is None:
                raise ValueError("scheme 'strobe' needs strobe_line (the line the word is read on)")
            if self.strobe_line >= self.n_lines:
                raise ValueError(
                    f"strobe_line = {self.strobe_line} is not one of the {self.n_lines} code lines "
                    f"(0..{self.n_lines - 1})"
                )
            if self.n_lines < 6:
                raise ValueError("scheme 'strobe' needs n_lines >= 6: a strobe and 5 data lines (codes up to 31)")
        elif self.strobe_line is not None:
            raise ValueError("strobe_line is only used with scheme 'strobe' (return_to_zero has no strobe)")
        if self.photodiode_line is not None and self.photodiode_line < self.n_lines:
            raise ValueError(
                f"photodiode_line = {self.photodiode_line} is one of the code lines "
                f"(0..{self.n_lines - 1}); wire the photodiode to its own line"
            )
        return self

    def lines(self):
        from acquisition.ttl import Lines

        return Lines(self.n_lines, self.scheme, self.strobe_line, self.photodiode_line)


class LslConfig(Strict):
    """Lab Streaming Layer streams of a recording system (acquisition/lsl_source.py), resolved by name: the spike
    stream (one channel: the unit number, 0..n_neurons-1; each sample's timestamp is the spike time) and the
    marker stream of code words (one channel)."""

    spike_stream: str = Field("cortexloop-spikes", min_length=1, max_length=200, description="The spike stream's name.")
    code_stream: str = Field(
        "cortexloop-codes", min_length=1, max_length=200, description="The event code marker stream's name."
    )
    n_neurons: int = Field(..., ge=1, le=65535, description="Units on the spike stream (required).")
    clock_margin_ms: float = Field(
        200.0,
        ge=0.0,
        le=10_000.0,
        description="The stream's clock is the latest spike time, estimated forward by the wall clock, less this "
        "margin (ms).",
    )
    stale_after_s: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="With nothing for this long (s) the stream is taken as stopped and the session ends cleanly.",
    )
    virtual_cortex: bool = Field(
        False,
        description="The streams come from cortexloop's virtual cortex (the simulated rig): `cortexloop run` "
        "starts it.",
    )


class OpenEphysConfig(Strict):
    """Where the Open Ephys GUI's Event Broadcaster publishes, and which sorted units are the session's neurons."""

    endpoint: str = Field(
        "auto",
        min_length=1,
        max_length=500,
        description='ZeroMQ endpoint of the Event Broadcaster, e.g. "tcp://192.168.1.20:5557" (its default port is '
        '5557). "auto": the simulated rig\'s openephys_pub endpoint.',
    )
    units: list[tuple[str | int, int]] = Field(
        default_factory=list,
        max_length=65535,
        description="The session's neurons, in order: neuron k is units[k] = [electrode, sorted_id]; the electrode "
        'is the GUI\'s name ("Electrode 3", "Tetrode 2") or a number k for "Electrode k"; sorted_id (at least 1) '
        "is the Spike Sorter's, one counter over all electrodes (a second electrode's first unit is not 1). Other "
        "units' spikes and unsorted spikes are skipped and counted.",
    )
    stream: str = Field(
        "",
        max_length=256,
        description="The Open Ephys stream whose samples are the session's clock; spikes and code lines must be on "
        'it ("": the first stream heard). Other streams\' events are skipped and counted.',
    )
    ttl_channel: str = Field(
        "",
        max_length=256,
        description="The TTL channel (its name as the GUI sends it, `channel_name`) whose lines carry the code words "
        'and the photodiode ("": the first TTL channel heard); TTLs of other channels are counted and ignored. '
        "`cortexloop check --live` lists the channels it hears.",
    )
    clock_margin_ms: float = Field(
        100.0,
        ge=0.0,
        le=10_000.0,
        description="The stream's clock is the latest sample received less this margin (ms), estimated forward by "
        "the wall clock in real time; it must exceed how late a spike can arrive behind a later event.",
    )
    stale_after_s: float = Field(
        2.0,
        gt=0.0,
        le=3600.0,
        description="In real time, a stream with nothing for this long (s) is taken as stopped: the session ends "
        "with a summary.",
    )
    virtual_cortex: bool = Field(
        False,
        description="The stream comes from cortexloop's virtual cortex (the simulated rig): `cortexloop run` starts "
        "it, its ground truth scores held-out accuracy. False on a live rig.",
    )

    @model_validator(mode="after")
    def _units(self) -> "OpenEphysConfig":
        seen = set()
        for k, (electrode, sorted_id) in enumerate(self.units):
            if sorted_id < 1:
                raise ValueError(
                    f"units[{k}] = {[electrode, sorted_id]}: sorted_id must be >= 1 "
                    "(0 is unsorted spikes, never a neuron)"
                )
            if isinstance(electrode, str) and not (0 < len(electrode) <= 256 and electrode.isprintable()):
                raise ValueError(f"units[{k}]: electrode name must be 1 to 256 printable characters")
            if isinstance(electrode, int) and electrode < 0:
                raise ValueError(f"units[{k}]: electrode number must be >= 0")
            key = (self.electrode_name(electrode), sorted_id)
            if key in seen:
                raise ValueError(f"units[{k}] = {[electrode, sorted_id]} appears twice")
            seen.add(key)
        return self

    @staticmethod
    def electrode_name(electrode: str | int) -> str:
        return electrode if isinstance(electrode, str) else f"Electrode {electrode}"

    def unit_map(self) -> dict[tuple[str, int], int]:
        """(electrode name, sorted_id) -> neuron index."""
        return {(self.electrode_name(e), u): k for k, (e, u) in enumerate(self.units)}


class CortexConfig(Strict):
    """The recording system: where spikes and event codes come from. The virtual cortex (a simulated V4 population
    behind a simulated recorder) or a live system heard through Open Ephys or LSL; another plugs in as an
    AcquisitionSource part."""

    population: PopulationConfig = Field(PopulationConfig(), description="The virtual cortex's ground-truth neurons.")
    spiking: SpikingConfig = Field(SpikingConfig(), description="How the virtual cortex turns rates into spikes.")
    recording: RecordingConfig = Field(
        RecordingConfig(), description="The simulated recording system's clock, batches and display lag."
    )
    ttl: TtlConfig = Field(TtlConfig(), description="The recording system's digital inputs for event codes.")
    source: Literal["virtual", "openephys", "lsl"] = Field(
        "virtual",
        description='Where spikes and event codes come from: "virtual" (the virtual cortex\'s native stream), '
        '"openephys" ([cortex.openephys]) or "lsl" ([cortex.lsl]).',
    )
    openephys: OpenEphysConfig | None = Field(
        None, description='The Open Ephys GUI\'s stream (needed by source "openephys").'
    )
    lsl: LslConfig | None = Field(None, description='The LSL streams (needed by source "lsl").')

    @model_validator(mode="after")
    def _source(self) -> "CortexConfig":
        if self.source == "lsl" and self.lsl is None:
            raise ValueError('source = "lsl" needs a [cortex.lsl] section (spike_stream, code_stream, n_neurons)')
        if self.source == "openephys":
            if self.openephys is None:
                raise ValueError('source = "openephys" needs a [cortex.openephys] section (endpoint, units)')
            if not self.openephys.units:
                raise ValueError(
                    "[cortex.openephys] units is empty: list the sorted units that are the session's "
                    "neurons, e.g. units = [[1, 1], [1, 2], [2, 3]] (sorted_id as the Spike Sorter numbers units: "
                    "one counter over all electrodes)"
                )
        return self

    @property
    def has_virtual_cortex(self) -> bool:
        """Whether this rig's recording system is cortexloop's virtual cortex (its process runs, its truth is known)."""
        return (
            self.source == "virtual"
            or (self.source == "openephys" and self.openephys.virtual_cortex)
            or (self.source == "lsl" and self.lsl.virtual_cortex)
        )
