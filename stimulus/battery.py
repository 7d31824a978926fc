"""In-silico experiments: parametric stimuli, the experiments that show them, and the runner that applies them.

A *responder* is any function of images to rates, `responder(images, neurons) -> (B, len(neurons))` spikes/s, with
images float (B, S, S, 3) in [0, 1] on a mid-grey (0.5) background; a compact model, the teacher ensemble or
the virtual cortex's true neurons. Its attribute `joint` (default False) says whether one pass gives every
neuron at once (the ensemble, the virtual cortex: the runner then shows all neurons' stimuli in one batch) or
each neuron's model is separate (compact models: each model sees only its own stimuli).

An experiment is a small declared object (`Experiment`): a name, whether its stimuli are the same for every
neuron, `stimuli(probe) -> Stimuli` (built from what earlier experiments found about the neuron, the `Probe`)
and `analyse(stimuli, evoked) -> Result` (tuning curves and named features). The runner goes through them in
order; an experiment may update the probe (the grating experiment sets the preferred orientation and
wavelength that the size, bar and curvature experiments then use). `EXPERIMENTS` holds the built-in ones;
a lab adds its own with `load_experiment("package.module:name")`, the way custom neuron types are named.

Conventions: orientation is the orientation of the stripes (or the long axis of a bar) in degrees, 0 =
horizontal, growing clockwise on the screen (image rows grow downwards), period 180; hue is the angle in the
opponent plane (red-green, blue-yellow) in degrees, 0 = red, 90 = blue, 180 = green, 270 = yellow; sizes and
wavelengths are in pixels of the image (the fingerprint also gives degrees of visual angle).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

GREY = 0.5
LUMA = np.array([0.299, 0.587, 0.114])
# Opponent axes: red-green (R - G) and blue-yellow (B - (R + G) / 2), each of unit length.
OPPONENT = np.array([[1.0, -1.0, 0.0], [-0.5, -0.5, 1.0]])
OPPONENT = OPPONENT / np.linalg.norm(OPPONENT, axis=1, keepdims=True)

ORIENTATIONS_DEG = np.arange(0.0, 180.0, 15.0)
HUES_DEG = np.arange(0.0, 360.0, 30.0)
PHASES = np.arange(4) * math.pi / 2
CURVATURE_TURNING_DEG = np.array([0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0])
ARC_DIRECTIONS_DEG = np.arange(0.0, 360.0, 45.0)


# ----------------------------------------------------------------------------- what is known of a neuron


@dataclass
class Probe:
    """What the experiments know about one neuron when they build its stimuli.

    size_px: image side S; colour: whether the rig shows colour; deg_per_px: visual angle of a pixel;
    centre_yx: receptive field centre (row, col) in pixels; diameter_px: receptive field diameter;
    orientation_deg, wavelength_px: the preferred grating; natural: (M, S, S, 3) float natural images
    (the pool's, gaudy ones excluded) for the attribution experiment; top: indices into `natural` of the
    images the neuron prefers (set by the natural-image experiment).
    """

    size_px: int
    colour: bool = True
    deg_per_px: float = 0.125
    centre_yx: tuple[float, float] | None = None
    diameter_px: float | None = None
    orientation_deg: float = 0.0
    wavelength_px: float | None = None
    natural: np.ndarray | None = None
    top: tuple[int, ...] = ()

    @property
    def centre(self) -> tuple[float, float]:
        c = (self.size_px - 1) / 2
        return self.centre_yx if self.centre_yx is not None else (c, c)

    @property
    def diameter(self) -> float:
        return self.diameter_px if self.diameter_px is not None else self.size_px / 2

    @property
    def wavelength(self) -> float:
        return self.wavelength_px if self.wavelength_px is not None else max(2.5, self.size_px / 6)


@dataclass
class Stimuli:
    """images (B, S, S, 3) float in [0, 1]; labels: per image the parameters it was made with (dicts)."""

    images: np.ndarray
    labels: list[dict]


@dataclass
class Curve:
    """One tuning curve: response (spikes/s above the blank screen's) against one stimulus parameter."""

    x: list[float]
    y: list[float]
    xlabel: str
    circular: float | None = None  # the period of x (180 for orientation, 360 for hue), None if not circular


@dataclass
class Result:
    """What an experiment found: its curves by name, its features (numbers or short strings) and probe updates."""

    curves: dict[str, Curve] = field(default_factory=dict)
    features: dict[str, float | str] = field(default_factory=dict)
    probe: dict = field(default_factory=dict)
    maps: dict[str, list] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A declared in-silico experiment.

    name: its key in results; shared: True when its stimuli do not depend on the probe (shown once for all
    neurons); stimuli(probe) -> Stimuli; analyse(stimuli, evoked (B,) spikes/s above the blank screen's,
    probe) -> Result.
    """

    name: str
    stimuli: Callable[[Probe], Stimuli]
    analyse: Callable[[Stimuli, np.ndarray, Probe], Result]
    shared: bool = False
    description: str = ""


# ----------------------------------------------------------------------------- stimulus drawing


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def grating(
    size: int, orientation_deg: float, wavelength_px: float, phase: float = 0.0, contrast: float = 1.0
) -> np.ndarray:
    """(S, S) luminance grating in [0, 1] around mid grey: stripes at `orientation_deg` (module conventions)."""
    yy, xx = _grid(size)
    phi = math.radians(orientation_deg)
    # Stripes run along (cos phi, sin phi) in (x right, y down); the wave vector is orthogonal to them.
    u = -xx * math.sin(phi) + yy * math.cos(phi)
    return GREY + 0.5 * contrast * np.cos(2 * math.pi * u / wavelength_px + phase)


def disc_mask(size: int, centre_yx: tuple[float, float], diameter_px: float, soft_px: float = 1.0) -> np.ndarray:
    """(S, S) aperture in [0, 1]: 1 inside a disc, a linear ramp `soft_px` wide at its edge."""
    yy, xx = _grid(size)
    r = np.hypot(yy - centre_yx[0], xx - centre_yx[1])
    return np.clip((diameter_px / 2 - r) / max(soft_px, 1e-6) + 0.5, 0.0, 1.0)


def to_rgb(lum: np.ndarray) -> np.ndarray:
    """(..., S, S) luminance -> (..., S, S, 3) grey RGB."""
    return np.repeat(np.clip(lum, 0.0, 1.0)[..., None], 3, -1)


def hue_rgb(hue_deg: float, contrast: float = 0.5) -> np.ndarray:
    """(3,) RGB of a hue at `contrast` along the opponent plane around mid grey (equal mean of R, G, B); 0.5, the
    default, keeps every hue inside the gamut (no channel beyond 0.09-0.91)."""
    h = math.radians(hue_deg)
    return GREY + contrast * (math.cos(h) * OPPONENT[0] + math.sin(h) * OPPONENT[1])


def blob(
    size: int, centre_yx: tuple[float, float], sigma_px: float, bright: bool, elongation: float = 1.0, angle_deg=0.0
) -> np.ndarray:
    """(S, S) Gaussian blob (a dot; a bar where elongation > 1, long axis at angle_deg) of full contrast."""
    yy, xx = _grid(size)
    dy, dx = yy - centre_yx[0], xx - centre_yx[1]
    a = math.radians(angle_deg)
    along = dx * math.cos(a) + dy * math.sin(a)
    across = -dx * math.sin(a) + dy * math.cos(a)
    g = np.exp(-(along**2) / (2 * (sigma_px * elongation) ** 2) - across**2 / (2 * sigma_px**2))
    return GREY + (0.5 if bright else -0.5) * g


def bar(
    size: int, centre_yx: tuple[float, float], length_px: float, width_px: float, angle_deg: float, bright: bool
) -> np.ndarray:
    """(S, S) bar of full contrast, anti-aliased edges, long axis at angle_deg."""
    yy, xx = _grid(size)
    dy, dx = yy - centre_yx[0], xx - centre_yx[1]
    a = math.radians(angle_deg)
    along = np.abs(dx * math.cos(a) + dy * math.sin(a))
    across = np.abs(-dx * math.sin(a) + dy * math.cos(a))
    inside = np.clip(length_px / 2 - along + 0.5, 0, 1) * np.clip(width_px / 2 - across + 0.5, 0, 1)
    return GREY + (0.5 if bright else -0.5) * inside


def arc(
    size: int,
    centre_yx: tuple[float, float],
    length_px: float,
    turning_deg: float,
    direction_deg: float,
    width_px: float = 1.5,
    bright: bool = True,
) -> np.ndarray:
    """(S, S) contour fragment: an arc of `length_px` whose tangent turns by `turning_deg` (0: straight), its middle
    point at centre_yx and its convex side facing `direction_deg` (0 = right, 90 = down)."""
    yy, xx = _grid(size)
    d = math.radians(direction_deg)
    n = 64
    t = np.linspace(-0.5, 0.5, n) * length_px
    if turning_deg < 1e-6:
        # A straight segment through the centre, perpendicular to the direction of the convex side.
        py = centre_yx[0] + t * math.cos(d)
        px = centre_yx[1] - t * math.sin(d)
    else:
        radius = length_px / math.radians(turning_deg)
        ang = d + t / radius
        py = centre_yx[0] + radius * (np.sin(ang) - math.sin(d))
        px = centre_yx[1] + radius * (np.cos(ang) - math.cos(d))
    dist = np.min(np.hypot(yy[..., None] - py, xx[..., None] - px), -1)
    ink = np.clip(width_px / 2 - dist + 0.5, 0, 1)
    return GREY + (0.5 if bright else -0.5) * ink


def filtered_noise(
    size: int, wavelength_px: float, orientations_deg: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """(S, S) noise texture of full contrast with energy at one scale: isotropic (no orientations given) or at the
    orientations given (one: oriented; two: cross-hatch). Random phases."""
    f = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    rad = np.hypot(fy, fx)
    band = np.exp(-(np.log2(np.maximum(rad, 1e-9) * wavelength_px) ** 2) / (2 * 0.4**2))
    if orientations_deg:
        theta = np.arctan2(fy, fx)
        ang = np.zeros_like(band)
        for o in orientations_deg:
            # Stripes at o have their wave vector at o + 90 degrees.
            k = math.radians(o + 90)
            ang += np.exp(3.0 * (np.cos(2 * (theta - k)) - 1))
        band = band * ang
    band[0, 0] = 0
    spec = band * np.exp(2j * math.pi * rng.random((size, size)))
    img = np.real(np.fft.ifft2(spec))
    return GREY + 0.5 * img / (np.abs(img).max() + 1e-9)


def phase_scrambled(lum: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(S, S) image with the amplitude spectrum of `lum` (mean kept) and random phases; full contrast kept."""
    x = lum - lum.mean()
    amp = np.abs(np.fft.fft2(x))
    # A real image's phase is odd-symmetric: take the phase of a real noise image.
    phase = np.angle(np.fft.fft2(rng.standard_normal(lum.shape)))
    out = np.real(np.fft.ifft2(amp * np.exp(1j * phase)))
    span = np.abs(x).max() + 1e-9
    return np.clip(lum.mean() + out * span / (np.abs(out).max() + 1e-9), 0.0, 1.0)


def blank(size: int) -> np.ndarray:
    """(1, S, S, 3) mid-grey screen."""
    return np.full((1, size, size, 3), GREY)


# ----------------------------------------------------------------------------- curve measures


def circular_preference(x_deg: np.ndarray, y: np.ndarray, period: float) -> tuple[float, float]:
    """(preferred value in degrees, selectivity index in [0, 1]) of a curve over a circular variable: the vector
    mean of the rectified responses (the orientation or hue selectivity index of physiology)."""
    w = np.clip(np.asarray(y, np.float64), 0, None)
    if w.sum() <= 0:
        return float("nan"), 0.0
    z = (w * np.exp(2j * np.pi * np.asarray(x_deg) / period)).sum() / w.sum()
    return float((np.angle(z) * period / (2 * np.pi)) % period), float(abs(z))


def half_width(x_deg: np.ndarray, y: np.ndarray, period: float) -> float:
    """Half-width at half-height (degrees) of the peak of a circular curve, from linear interpolation on a grid
    refined 10x; the curve's minimum is its floor. `period` returned where the curve never falls to half."""
    y = np.asarray(y, np.float64)
    lo, hi = y.min(), y.max()
    if hi - lo <= 1e-9:
        return float(period / 2)
    step = float(x_deg[1] - x_deg[0])
    fine = np.arange(0, period, step / 10)
    ext_x = np.concatenate([x_deg, [x_deg[0] + period]])
    ext_y = np.concatenate([y, [y[0]]])
    yf = np.interp(fine, ext_x, ext_y)
    half = lo + (hi - lo) / 2
    peak = int(np.argmax(yf))
    n = len(fine)
    widths = []
    for sign in (1, -1):
        k = 0
        while k < n // 2 and yf[(peak + sign * k) % n] >= half:
            k += 1
        widths.append(k * step / 10)
    return float(min(np.mean(widths), period / 2))


def index(a: float, b: float) -> float:
    """(a - b) / (|a| + |b|): +1 when only a drives, -1 when only b does; 0 when neither does."""
    den = abs(a) + abs(b)
    return float((a - b) / den) if den > 1e-9 else 0.0


# ----------------------------------------------------------------------------- the built-in experiments


def _grating_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    wavelengths = np.geomspace(2.5, s, 8)
    imgs, labels = [], []
    for o in ORIENTATIONS_DEG:
        for lam in wavelengths:
            for ph in PHASES:
                imgs.append(to_rgb(grating(s, o, lam, ph)))
                labels.append({"orientation_deg": float(o), "wavelength_px": float(lam)})
    return Stimuli(np.stack(imgs), labels)


def _grating_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    n_o, n_w = len(ORIENTATIONS_DEG), len(st.labels) // (len(ORIENTATIONS_DEG) * len(PHASES))
    grid = ev.reshape(n_o, n_w, len(PHASES)).mean(-1)  # phases averaged: the energy a complex cell sees
    wavelengths = np.array([st.labels[j * len(PHASES)]["wavelength_px"] for j in range(n_w)])
    io, iw = np.unravel_index(int(np.argmax(grid)), grid.shape)
    orient = grid[:, iw]
    sf = grid[io]
    pref_o, osi = circular_preference(ORIENTATIONS_DEG, orient - orient.min(), 180.0)
    bw = half_width(ORIENTATIONS_DEG, orient, 180.0)
    # Preferred wavelength: the response-weighted mean of log wavelength around the peak.
    w = np.clip(sf - sf.min(), 0, None)
    pref_w = float(2 ** ((w * np.log2(wavelengths)).sum() / w.sum())) if w.sum() > 0 else float(wavelengths[iw])
    above = wavelengths[sf >= sf.min() + (sf.max() - sf.min()) / 2]
    sf_bw = float(np.log2(above.max() / above.min())) if len(above) else 0.0
    return Result(
        curves={
            "orientation": Curve(ORIENTATIONS_DEG.tolist(), orient.tolist(), "orientation (deg)", 180.0),
            "spatial_frequency": Curve(
                (1.0 / wavelengths).tolist(), sf.tolist(), "spatial frequency (cycles/px)", None
            ),
        },
        features={
            "grating_max_hz": float(grid.max()),
            "preferred_orientation_deg": pref_o if not math.isnan(pref_o) else float(ORIENTATIONS_DEG[io]),
            "orientation_bandwidth_deg": bw,
            "orientation_selectivity": osi,
            "preferred_wavelength_px": pref_w,
            "wavelength_bandwidth_octaves": sf_bw,
        },
        probe={"orientation_deg": float(ORIENTATIONS_DEG[io]), "wavelength_px": float(wavelengths[iw])},
    )


def _position_contents(s: int, d: float) -> list[Callable[[tuple[float, float]], np.ndarray]]:
    """Small probes for the receptive field map: grating patches at four orientations, bright and dark dots, and
    discs of four hues; each a function of the centre (row, col) -> (S, S, 3)."""
    lam = max(2.5, d / 2)
    out = []
    for o in (0, 45, 90, 135):
        g = grating(s, o, lam)
        out.append(lambda c, g=g: to_rgb(GREY + (g - GREY) * disc_mask(s, c, d))[...])
    for bright in (True, False):
        out.append(lambda c, b=bright: to_rgb(blob(s, c, d / 5, b)))
    for h in (0, 90, 180, 270):
        rgb = hue_rgb(h)
        out.append(lambda c, rgb=rgb: GREY + (rgb - GREY) * disc_mask(s, c, d)[..., None])
    return out


def _position_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    d = s / 4
    pos = np.linspace(d / 2, s - 1 - d / 2, 7)
    imgs, labels = [], []
    for k, make in enumerate(_position_contents(s, d)):
        for y in pos:
            for x in pos:
                imgs.append(make((y, x)))
                labels.append({"content": k, "row_px": float(y), "col_px": float(x)})
    return Stimuli(np.stack(imgs), labels)


def _position_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    n_pos = 7
    per = ev.reshape(-1, n_pos, n_pos)  # (contents, rows, cols)
    best_content = int(np.argmax(per.reshape(len(per), -1).max(1)))
    m = per[best_content]
    rows = np.array([st.labels[i * n_pos]["row_px"] for i in range(n_pos)])
    lo, hi = min(m.min(), 0.0), m.max()
    if hi <= 1e-9:
        centre, diam, frac = (p.centre[0], p.centre[1]), p.diameter, 1.0
    else:
        w = np.clip(m - (lo + hi) / 2, 0, None)
        centre = (float((w.sum(1) * rows).sum() / w.sum()), float((w.sum(0) * rows).sum() / w.sum()))
        step = rows[1] - rows[0]
        area = float((m >= (lo + hi) / 2).sum()) * step**2
        # The map is the RF blurred by the probe: subtract the probe's own extent (its diameter is S/4).
        diam = max(2 * math.sqrt(area / math.pi) - p.size_px / 8, p.size_px / 8)
        frac = float((m >= (lo + hi) / 2).mean())
    return Result(
        curves={"position": Curve(list(range(n_pos * n_pos)), m.ravel().tolist(), "probe position (row-major 7x7)")},
        features={
            "rf_centre_row_px": centre[0],
            "rf_centre_col_px": centre[1],
            "rf_diameter_px": float(diam),
            "position_extent": frac,
        },
        probe={"centre_yx": centre, "diameter_px": float(diam)},
        maps={"position": m.tolist()},
    )


def _size_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    imgs, labels = [], []
    for dia in np.geomspace(2, 1.5 * s, 9):
        for ph in PHASES[::2]:
            g = grating(s, p.orientation_deg, p.wavelength, ph)
            imgs.append(to_rgb(GREY + (g - GREY) * disc_mask(s, p.centre, dia)))
            labels.append({"diameter_px": float(dia)})
    return Stimuli(np.stack(imgs), labels)


def _size_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    y = ev.reshape(-1, 2).mean(-1)
    x = np.array([st.labels[i * 2]["diameter_px"] for i in range(len(y))])
    peak = int(np.argmax(y))
    return Result(
        curves={"size": Curve(x.tolist(), y.tolist(), "grating diameter (px)")},
        features={
            "preferred_size_px": float(x[peak]),
            "surround_suppression": float(1 - y[-1] / y[peak]) if y[peak] > 1e-9 else 0.0,
        },
    )


def _bar_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    width = max(1.0, p.wavelength / 2)
    imgs, labels = [], []
    for length in np.geomspace(max(1.5, width), 1.5 * s, 9):
        for bright in (True, False):
            imgs.append(to_rgb(bar(s, p.centre, length, width, p.orientation_deg, bright)))
            labels.append({"length_px": float(length), "bright": bright})
    return Stimuli(np.stack(imgs), labels)


def _bar_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    both = ev.reshape(-1, 2)
    pol = int(np.argmax(both.max(0)))
    y = both[:, pol]
    x = np.array([st.labels[2 * i]["length_px"] for i in range(len(y))])
    peak = int(np.argmax(y))
    return Result(
        curves={"bar_length": Curve(x.tolist(), y.tolist(), "bar length (px)")},
        features={
            "bar_max_hz": float(y.max()),
            "preferred_bar_length_px": float(x[peak]),
            "end_stopping": float(1 - y[-1] / y[peak]) if y[peak] > 1e-9 else 0.0,
            "bar_polarity": "bright" if pol == 0 else "dark",
        },
    )


def _arc_lengths(p: Probe) -> tuple[float, float]:
    """Two fragment lengths (px): a contour template spans a good part of the RF, whose size is only estimated."""
    return (0.3 * p.size_px, 0.5 * p.size_px)


def _curvature_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    imgs, labels = [], []
    for length in _arc_lengths(p):
        for turning in CURVATURE_TURNING_DEG:
            for d in ARC_DIRECTIONS_DEG:
                imgs.append(to_rgb(arc(s, p.centre, length, turning, d)))
                labels.append({"turning_deg": float(turning), "direction_deg": float(d), "length_px": length})
    return Stimuli(np.stack(imgs), labels)


def _curvature_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    grids = ev.reshape(2, len(CURVATURE_TURNING_DEG), len(ARC_DIRECTIONS_DEG))
    # The length at which curved fragments win most over straight ones (or lose least) is the one reported.
    idx = [index(float(g.max(1)[1:].max()), float(g.max(1)[0])) for g in grids]
    k = int(np.argmax(idx))
    grid = grids[k]
    curv = grid.max(1)
    best_t = int(np.argmax(curv))
    direction = grid[max(best_t, 1)]  # the direction tuning of a curved fragment (a straight one has none)
    pref_d, dsi = circular_preference(ARC_DIRECTIONS_DEG, direction - direction.min(), 360.0)
    length = _arc_lengths(p)[k]
    return Result(
        curves={
            "curvature": Curve(CURVATURE_TURNING_DEG.tolist(), curv.tolist(), "contour turning angle (deg)"),
            "curvature_direction": Curve(
                ARC_DIRECTIONS_DEG.tolist(), direction.tolist(), "direction of the convex side (deg)", 360.0
            ),
        },
        features={
            "contour_max_hz": float(grids.max()),
            "preferred_turning_deg": float(CURVATURE_TURNING_DEG[best_t]),
            "preferred_curvature_per_px": float(math.radians(CURVATURE_TURNING_DEG[best_t]) / length),
            "fragment_length_px": float(length),
            "curvature_index": idx[k],
            "preferred_convex_direction_deg": pref_d if not math.isnan(pref_d) else 0.0,
            "convex_direction_selectivity": dsi,
        },
    )


def _dot_sigmas(s: int) -> np.ndarray:
    return np.geomspace(0.6, s / 6, 7)


def _dot_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    imgs, labels = [], []
    for elong in (1.0, 4.0):
        for sg in _dot_sigmas(s):
            for bright in (True, False):
                imgs.append(to_rgb(blob(s, p.centre, sg, bright, elong, p.orientation_deg)))
                labels.append({"sigma_px": float(sg), "bright": bright, "elongation": elong})
    return Stimuli(np.stack(imgs), labels)


def _dot_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    n = len(_dot_sigmas(p.size_px))
    g = ev.reshape(2, n, 2)  # (dot / elongated, sigma, bright / dark)
    pol = int(np.argmax(g[0].max(0)))
    sig = _dot_sigmas(p.size_px)
    dots, bars = g[0, :, pol], g[1, :, pol]
    best = int(np.argmax(dots))
    # Dot against bar of the same width: a blob detector prefers the round one, an edge or bar detector not.
    return Result(
        curves={"dot_size": Curve((2 * sig).tolist(), dots.tolist(), "dot diameter (2 sigma, px)")},
        features={
            "dot_max_hz": float(dots.max()),
            "preferred_dot_diameter_px": float(2 * sig[best]),
            "dot_polarity": "bright" if pol == 0 else "dark",
            "dot_index": index(float(dots[best]), float(bars[best])),
        },
    )


def _hue_stimuli(p: Probe) -> Stimuli:
    # Uniform fields: a disc's edge would carry orientation energy and its blob would drive dot detectors.
    s = p.size_px
    mask = np.ones((s, s, 1))
    imgs, labels = [], []
    for h in HUES_DEG:
        imgs.append(GREY + (hue_rgb(h) - GREY) * mask)
        labels.append({"hue_deg": float(h)})
    for lum in (1.0, 0.0):
        imgs.append(np.broadcast_to(GREY + (lum - GREY) * 0.7 * mask, (s, s, 3)))
        labels.append({"luminance": lum})
    return Stimuli(np.stack(imgs), labels)


def _hue_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    hue = ev[: len(HUES_DEG)]
    lum = ev[len(HUES_DEG) :]
    pref, hsi = circular_preference(HUES_DEG, hue - hue.min(), 360.0)
    return Result(
        curves={"hue": Curve(HUES_DEG.tolist(), hue.tolist(), "hue (deg)", 360.0)},
        features={
            "hue_max_hz": float(hue.max()),
            "luminance_max_hz": float(lum.max()),
            "preferred_hue_deg": pref if not math.isnan(pref) else 0.0,
            "hue_selectivity": hsi,
            "hue_modulation_hz": float(hue.max() - hue.min()),
        },
    )


def _hue_grating_stimuli(p: Probe) -> Stimuli:
    """Oriented gratings on coloured surfaces: four orientations x eight hues, two phases, in the RF."""
    s = p.size_px
    mask = disc_mask(s, p.centre, min(1.5 * p.diameter, 1.5 * s))[..., None]
    imgs, labels = [], []
    for o in (0.0, 45.0, 90.0, 135.0):
        for h in np.arange(0.0, 360.0, 45.0):
            for ph in (0.0, math.pi):
                g = grating(s, o, p.wavelength, ph, contrast=0.6)[..., None]
                img = (hue_rgb(h, 0.25) - GREY) + g
                imgs.append(GREY + (np.clip(img, 0, 1) - GREY) * mask)
                labels.append({"orientation_deg": o, "hue_deg": float(h)})
    return Stimuli(np.stack(imgs), labels)


def _hue_grating_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    g = ev.reshape(4, 8, 2).mean(-1)
    hues = np.arange(0.0, 360.0, 45.0)
    io = int(np.argmax(g.max(1)))
    pref, hsi = circular_preference(hues, g[io] - g[io].min(), 360.0)
    return Result(
        curves={"hue_grating": Curve(hues.tolist(), g[io].tolist(), "hue of a grating's surface (deg)", 360.0)},
        features={
            "hue_grating_max_hz": float(g.max()),
            "hue_grating_selectivity": hsi,
            "hue_grating_modulation_hz": float(g[io].max() - g[io].min()),
        },
    )


def _texture_sources(s: int) -> list[np.ndarray]:
    """Luminance textures: band-limited noise at three scales x (isotropic, two orientations, a cross-hatch),
    seeded, so every neuron and every system sees the same ones."""
    rng = np.random.default_rng(12345)
    out = []
    for lam in (s / 10, s / 6, s / 3.5):
        lam = max(2.5, lam)
        for orients in ((), (0.0,), (90.0,), (45.0,), (135.0,), (0.0, 90.0), (45.0, 135.0)):
            out.append(filtered_noise(s, lam, orients, rng))
    return out


def _texture_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    rng = np.random.default_rng(54321)
    imgs, labels = [], []
    textures = _texture_sources(s)
    # Structured images whose phase matters: bars, a dot array and a checkerboard.
    yy, xx = _grid(s)
    checks = GREY + 0.5 * np.sign(np.sin(2 * math.pi * yy / (s / 4)) * np.sin(2 * math.pi * xx / (s / 4)))
    dots = np.full((s, s), GREY)
    for cy in np.arange(s / 8, s, s / 4):
        for cx in np.arange(s / 8, s, s / 4):
            dots = np.minimum(dots, blob(s, (cy, cx), s / 24, False))
    lines = np.full((s, s), GREY)
    for cy in np.arange(s / 8, s, s / 4):
        lines = np.maximum(lines, bar(s, (cy, s / 2), s * 0.6, 1.5, 0.0, True))
    textures += [checks, dots, lines]
    for k, t in enumerate(textures):
        imgs.append(to_rgb(t))
        labels.append({"texture": k, "scrambled": False})
        imgs.append(to_rgb(phase_scrambled(t, rng)))
        labels.append({"texture": k, "scrambled": True})
    return Stimuli(np.stack(imgs), labels)


def _texture_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    pairs = ev.reshape(-1, 2)
    orig, scr = pairs[:, 0], pairs[:, 1]
    noise = orig[:21]  # band-limited noise textures (the last three are structured images)
    keep = orig > 0.2 * max(orig.max(), 1e-9)
    inv = float(np.clip(scr[keep].mean() / orig[keep].mean(), 0, 2)) if keep.any() and orig.max() > 0 else 0.0
    return Result(
        curves={"texture": Curve(list(range(len(orig))), orig.tolist(), "texture (index)")},
        features={
            "texture_max_hz": float(noise.max()),
            "structured_max_hz": float(orig[21:].max()),
            "scramble_invariance": inv,
            "isotropic_noise_max_hz": float(noise[::7].max()),
        },
    )


def _natural_stimuli(p: Probe) -> Stimuli:
    nat = p.natural if p.natural is not None else np.zeros((0, p.size_px, p.size_px, 3))
    return Stimuli(np.asarray(nat, np.float64), [{"natural": i} for i in range(len(nat))])


def _natural_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    if len(ev) == 0:
        return Result()
    order = np.argsort(-ev)
    top = tuple(int(i) for i in order[:N_TOP])
    return Result(
        features={"natural_max_hz": float(ev.max()), "natural_median_hz": float(np.median(ev))},
        probe={"top": top},
        maps={"natural_top": list(top), "natural_top_hz": [float(ev[i]) for i in top]},
    )


OCCLUDER_FRAC = 0.3
OCCLUSION_GRID = 5
N_TOP = 3


def _occlusion_positions(s: int) -> np.ndarray:
    side = s * OCCLUDER_FRAC
    return np.linspace(side / 2, s - side / 2, OCCLUSION_GRID)


def _occlusion_stimuli(p: Probe) -> Stimuli:
    s = p.size_px
    if p.natural is None or not p.top:
        return Stimuli(np.zeros((0, s, s, 3)), [])
    side = s * OCCLUDER_FRAC
    yy, xx = _grid(s)
    imgs, labels = [], []
    for k, i in enumerate(p.top):
        img = np.asarray(p.natural[i], np.float64)
        imgs.append(img)
        labels.append({"image": int(i), "occluded": False})
        for cy in _occlusion_positions(s):
            for cx in _occlusion_positions(s):
                m = (np.abs(yy - cy) <= side / 2) & (np.abs(xx - cx) <= side / 2)
                imgs.append(np.where(m[..., None], GREY, img))
                labels.append({"image": int(i), "row_px": float(cy), "col_px": float(cx)})
    return Stimuli(np.stack(imgs), labels)


def _occlusion_analyse(st: Stimuli, ev: np.ndarray, p: Probe) -> Result:
    if len(ev) == 0:
        return Result()
    per = ev.reshape(len(p.top), -1)
    maps = per[:, :1] - per[:, 1:]  # how much the response falls when each region is covered
    maps = maps.reshape(len(p.top), OCCLUSION_GRID, OCCLUSION_GRID)
    mean_map = maps.mean(0)
    return Result(
        curves={
            "occlusion": Curve(list(range(mean_map.size)), mean_map.ravel().tolist(), "occluder position (row-major)")
        },
        maps={"occlusion": maps.tolist()},
    )


def _blank_stimuli(p: Probe) -> Stimuli:
    return Stimuli(blank(p.size_px), [{"blank": True}])


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "gratings",
            _grating_stimuli,
            _grating_analyse,
            shared=True,
            description="full-field luminance gratings, 12 orientations x 8 wavelengths x 4 phases",
        ),
        Experiment(
            "position",
            _position_stimuli,
            _position_analyse,
            shared=True,
            description="small probes (grating patches, dots, hue discs) on a 7x7 grid: the receptive field",
        ),
        Experiment("size", _size_stimuli, _size_analyse, description="preferred grating in apertures of 9 sizes"),
        Experiment("bars", _bar_stimuli, _bar_analyse, description="bars of 9 lengths: end-stopping"),
        Experiment(
            "curvature",
            _curvature_stimuli,
            _curvature_analyse,
            description="contour fragments turning 0-180 deg, 8 directions of the convex side",
        ),
        Experiment("dots", _dot_stimuli, _dot_analyse, description="dots and bars of 7 sizes, both polarities"),
        Experiment(
            "hue", _hue_stimuli, _hue_analyse, description="uniform fields of 12 hues and of light and dark grey"
        ),
        Experiment(
            "hue_gratings",
            _hue_grating_stimuli,
            _hue_grating_analyse,
            description="gratings of 4 orientations on surfaces of 8 hues",
        ),
        Experiment(
            "texture",
            _texture_stimuli,
            _texture_analyse,
            shared=True,
            description="24 textures and structured images, each with its phase-scrambled version",
        ),
        Experiment(
            "natural",
            _natural_stimuli,
            _natural_analyse,
            shared=True,
            description="the pool's natural images: the neuron's top three",
        ),
        Experiment(
            "occlusion",
            _occlusion_stimuli,
            _occlusion_analyse,
            description="each top natural image with a grey square over 5x5 positions",
        ),
    )
}
BLANK = Experiment("blank", _blank_stimuli, lambda st, ev, p: Result(), shared=True)
# Shared experiments first: the RF position and the preferred grating set the probe of the rest.
DEFAULT_ORDER = (
    "gratings",
    "position",
    "texture",
    "natural",
    "size",
    "bars",
    "curvature",
    "dots",
    "hue",
    "hue_gratings",
    "occlusion",
)


def load_experiment(path: str) -> Experiment:
    """An Experiment named "package.module:name" (an Experiment object, or a function returning one); ValueError
    saying why when it cannot be loaded."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f'experiment {path!r} must look like "package.module:name"')
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"experiment {path!r} cannot be loaded: {err}") from None
    if callable(obj) and not isinstance(obj, Experiment):
        obj = obj()
    if not isinstance(obj, Experiment):
        raise ValueError(f"experiment {path!r} is not an Experiment")
    return obj


def resolve(names: Sequence[str] | None = None) -> list[Experiment]:
    """Experiments by built-in name or import path, in the order given (default: DEFAULT_ORDER)."""
    out = []
    for n in names if names is not None else DEFAULT_ORDER:
        if n in EXPERIMENTS:
            out.append(EXPERIMENTS[n])
        elif ":" in n:
            out.append(load_experiment(n))
        else:
            raise ValueError(f"unknown experiment {n!r}; built in: {sorted(EXPERIMENTS)}, or package.module:name")
    return out


# ----------------------------------------------------------------------------- the runner


@dataclass
class NeuronBattery:
    """One neuron's battery: per experiment its Result, the probe its stimuli were built from, and the blank
    screen's rate (spikes/s)."""

    neuron: int
    blank_hz: float
    results: dict[str, Result]
    probes: dict[str, Probe]


Responder = Callable[[np.ndarray, Sequence[int]], np.ndarray]


def _respond(responder: Responder, batches: list[np.ndarray], neurons: list[int]) -> list[np.ndarray]:
    """Rates of neuron neurons[i] to batches[i], each (B_i,)."""
    if getattr(responder, "joint", False):
        sizes = [len(b) for b in batches]
        if sum(sizes) == 0:
            return [np.zeros(0) for _ in batches]
        rates = np.asarray(responder(np.concatenate([b for b in batches if len(b)]), neurons))
        out, a = [], 0
        for k, n in enumerate(sizes):
            out.append(rates[a : a + n, k])
            a += n
        return out
    return [np.asarray(responder(b, [n]))[:, 0] if len(b) else np.zeros(0) for b, n in zip(batches, neurons)]


def run_battery(
    responder: Responder,
    neurons: Sequence[int],
    probe: Probe,
    experiments: Sequence[Experiment] | None = None,
    follow: Sequence[NeuronBattery] | None = None,
) -> list[NeuronBattery]:
    """Run the experiments in order on every neuron; returns one NeuronBattery per neuron.

    probe: the starting probe (image size, colour, natural images); each neuron's copy is updated by the
    experiments' findings. follow: another run of the same neurons (e.g. the compact models'); each
    experiment then shows exactly the stimuli that run showed (its probes), so the two sets of curves are
    comparable point for point (the truth measured on the model's stimuli).
    """
    experiments = list(experiments) if experiments is not None else resolve()
    neurons = list(neurons)
    blank_rates = _respond(responder, [blank(probe.size_px)] * len(neurons), neurons)
    blank_hz = [float(b[0]) for b in blank_rates]
    probes = [replace(probe) for _ in neurons]
    out = [NeuronBattery(n, blank_hz[k], {}, {}) for k, n in enumerate(neurons)]
    for exp in experiments:
        use = [f.probes[exp.name] for f in follow] if follow is not None else probes
        if exp.shared:
            st = exp.stimuli(probe)
            sts = [st] * len(neurons)
            if getattr(responder, "joint", False):
                rates = np.asarray(responder(st.images, neurons)) if len(st.images) else np.zeros((0, len(neurons)))
                resp = [rates[:, k] for k in range(len(neurons))]
            else:
                resp = _respond(responder, [st.images] * len(neurons), neurons)
        else:
            sts = [exp.stimuli(u) for u in use]
            resp = _respond(responder, [s.images for s in sts], neurons)
        for k in range(len(neurons)):
            ev = resp[k] - blank_hz[k]
            res = exp.analyse(sts[k], ev, use[k])
            out[k].results[exp.name] = res
            out[k].probes[exp.name] = use[k]
            if follow is None and res.probe:
                probes[k] = replace(probes[k], **res.probe)
    return out


def curve_correlations(a: NeuronBattery, b: NeuronBattery) -> dict[str, float]:
    """Pearson r of every curve two runs share (same stimuli: one run followed the other); NaN where either
    curve is flat."""
    out = {}
    for name, ra in a.results.items():
        rb = b.results.get(name)
        if rb is None:
            continue
        for cname, ca in ra.curves.items():
            cb = rb.curves.get(cname)
            if cb is None or len(ca.y) != len(cb.y) or len(ca.y) < 3:
                continue
            ya, yb = np.asarray(ca.y), np.asarray(cb.y)
            if ya.std() < 1e-9 or yb.std() < 1e-9:
                out[cname] = float("nan")
            else:
                out[cname] = float(np.corrcoef(ya, yb)[0, 1])
    return out
