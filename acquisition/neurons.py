"""The neuron zoo of the virtual cortex: each neuron a fixed, known function of the image.

Every built-in neuron has a receptive field (centre, diameter) inside the image and returns a *drive*: a
number that grows with how much the image holds what the neuron prefers (signed for types whose
anti-preferred stimulus suppresses them). Population (acquisition/population.py) turns drives into spikes/s.

Types (V4-like; each explained in docs/virtual-cortex.md): oriented, curvature, dot, texture, colour and cnn
(units of a frozen, randomly initialized CNN); and selective types that respond to few natural images:
conjunction (colour and orientation), sparse_curvature (curvature at one position), sparse_texture. The early features (a Gabor bank, Hessian maps) are computed
once per batch in the Fourier domain and shared by all units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

N_ORIENT = 8  # orientations of the shared Gabor bank (stripe orientations 0, 22.5, ... deg)
WAVELENGTH_FRAC = (0.10, 0.16, 0.26)  # Gabor wavelengths as fractions of the image side
DOT_SIGMA_FRAC = (0.04, 0.07)  # blob scales (Gaussian sigma) as fractions of the image side
LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- shared features


@dataclass
class Features:
    """Early visual features of one batch, shared by every unit."""

    rgb: torch.Tensor  # (B, 3, S, S) in [0, 1]
    amp: torch.Tensor | None  # (B, N_ORIENT * n_scales, S, S) oriented amplitude, channel = scale * N_ORIENT + o
    blob: torch.Tensor | None  # (B, n_dot_scales * 2, S, S): channel = scale * 2 + (0 bright, 1 dark)


class FeatureBank:
    """Analytic (quadrature) Gabor filters and scale-normalized Hessians, applied by FFT.

    The image is padded with mid grey by three envelope widths of the coarsest
    filter, so filters do not wrap around.
    """

    def __init__(self, size_px: int):
        self.size = size_px
        margin = 3 * 0.56 * max(2.5, WAVELENGTH_FRAC[-1] * size_px)
        self.pad = int(8 * math.ceil((size_px + margin) / 8))
        f = torch.fft.fftfreq(self.pad, dtype=torch.float64)
        fy, fx = torch.meshgrid(f, f, indexing="ij")
        self.wavelengths_px = [max(2.5, w * size_px) for w in WAVELENGTH_FRAC]
        self.orientations_rad = [o * math.pi / N_ORIENT for o in range(N_ORIENT)]
        # Each analytic Gabor's spectrum is a Gaussian bump around its centre frequency.
        # Only a Q x Q block of bins around it (+-3 sigma_f) is kept and inverted at
        # size Q: that gives the response demodulated to zero frequency, sampled every
        # P/Q pixels (same magnitude), far cheaper than inverting at full size.
        # Magnitudes are then interpolated back to the pixel grid.
        self.bands = []  # per scale: (rows (K, Q), cols (K, Q), spectra (K, Q, Q), upsample (S, Q), Q)
        p = self.pad
        for lam in self.wavelengths_px:
            sigma_x = 0.56 * lam  # about one octave of bandwidth
            sigma_f = 1.0 / (2 * math.pi * sigma_x)
            q = min(p, max(8, 2 * math.ceil(3 * sigma_f * p)))
            m = torch.fft.fftfreq(q, 1.0 / q).round().long()  # offsets 0..q/2-1, -q/2..-1 in bins
            rows, cols, spectra = [], [], []
            for phi in self.orientations_rad:
                # Stripes along (cos phi, sin phi) in (x right, y down): the wave vector is orthogonal.
                kx, ky = -math.sin(phi) / lam, math.cos(phi) / lam
                r = (round(ky * p) + m) % p
                c = (round(kx * p) + m) % p
                # One-sided (analytic) spectrum: |response| is the local energy of the quadrature pair.
                g = torch.exp(-((f[r][:, None] - ky) ** 2 + (f[c][None, :] - kx) ** 2) / (2 * sigma_f**2))
                rows.append(r)
                cols.append(c)
                spectra.append(_no_denormals(g) * (q / p) ** 2)  # inverse FFT at size q instead of p
            step = p / q
            up = torch.zeros(size_px, q, dtype=torch.float64)
            pos = torch.arange(size_px, dtype=torch.float64) / step
            j0 = pos.floor().long()
            w = pos - j0
            up[torch.arange(size_px), j0] = 1 - w
            up[torch.arange(size_px), torch.clamp(j0 + 1, max=q - 1)] += w
            self.bands.append(
                (torch.stack(rows), torch.stack(cols), torch.stack(spectra).to(torch.complex64), up.float(), q)
            )
        self.dot_sigmas_px = [max(0.8, s * size_px) for s in DOT_SIGMA_FRAC]
        hess = []
        # Hessian filters are real and even: the half spectrum (rfft) suffices.
        hy, hx = torch.meshgrid(f, torch.fft.rfftfreq(self.pad, dtype=torch.float64), indexing="ij")
        for s in self.dot_sigmas_px:
            g = torch.exp(-2 * math.pi**2 * s**2 * (hx**2 + hy**2))
            wx, wy = 2 * math.pi * hx, 2 * math.pi * hy
            # sigma^2-normalized second derivatives (i w)^2 G: the same blob gives the same value at any scale.
            hess += [-(wx**2) * g * s**2, -(wy**2) * g * s**2, -(wx * wy) * g * s**2]
        self.hessian_spectra = _no_denormals(torch.stack(hess)).float()  # (3 * n_scales, P, P // 2 + 1)

    @property
    def n_amp_channels(self) -> int:
        return N_ORIENT * len(self.wavelengths_px)

    def compute(self, rgb: torch.Tensor, need_amp: bool, need_blob: bool) -> Features:
        if not (need_amp or need_blob):
            return Features(rgb, None, None)
        s, p = self.size, self.pad
        lum = torch.einsum("bchw,c->bhw", rgb, torch.tensor(LUMA, dtype=rgb.dtype)) - 0.5
        padded = F.pad(lum, (0, p - s, 0, p - s))
        amp = blob = None
        if need_amp:
            spec = torch.fft.fft2(padded)  # (B, P, P)
            parts = []
            for rows, cols, spectra, up, q in self.bands:
                band = spec[:, rows[:, :, None], cols[:, None, :]] * spectra  # (B, K, Q, Q)
                mag = torch.fft.ifft2(band).abs()
                parts.append(up @ mag @ up.T)  # (B, K, S, S)
            amp = torch.cat(parts, 1)
        if need_blob:
            half = torch.fft.rfft2(padded)[:, None]  # (B, 1, P, P // 2 + 1)
            h = torch.fft.irfft2(half * self.hessian_spectra, s=(p, p))[..., :s, :s]
            h = h.reshape(len(rgb), -1, 3, s, s)
            lxx, lyy, lxy = h[:, :, 0], h[:, :, 1], h[:, :, 2]
            trace = lxx + lyy
            # The weaker principal curvature (when both bend the same way): zero for lines and
            # edges, small for elongated blobs, largest for round dots.
            spread = torch.sqrt(((lxx - lyy) / 2) ** 2 + lxy**2)
            strength = torch.clamp(trace.abs() / 2 - spread, min=0.0)
            # A bright blob curves the luminance down in both directions (trace < 0).
            bright = strength * (trace < 0)
            dark = strength * (trace > 0)
            blob = torch.stack([bright, dark], 2).reshape(len(rgb), -1, s, s)
        return Features(rgb, amp, blob)


# ----------------------------------------------------------------------------- helpers


def _no_denormals(w):
    """Zero the far tails of Gaussians: float32 denormals make CPU matrix products much slower."""
    return w * (abs(w) > 1e-7 * abs(w).max())


def gaussian_windows(centres_yx: np.ndarray, sigmas: np.ndarray, size: int, peak_one: bool = False) -> torch.Tensor:
    """(n, S*S) Gaussian windows; summing to one, or with peak one."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = np.asarray(centres_yx, np.float64)
    sg = np.asarray(sigmas, np.float64)[:, None, None]
    w = np.exp(-((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / (2 * sg**2))
    w = w.reshape(len(c), -1)
    w = w / (w.max(1, keepdims=True) if peak_one else w.sum(1, keepdims=True))
    return torch.tensor(_no_denormals(w), dtype=torch.float32)


def orientation_weights(pref_rad: np.ndarray, kappa: float | np.ndarray) -> np.ndarray:
    """(n, N_ORIENT) von Mises weights over the bank's orientations (period pi), summing to one."""
    bank = np.arange(N_ORIENT) * np.pi / N_ORIENT
    k = np.asarray(kappa, np.float64).reshape(-1, 1)
    w = np.exp(k * (np.cos(2 * (bank[None] - np.asarray(pref_rad)[:, None])) - 1))
    return w / w.sum(1, keepdims=True)


def place_rfs(
    rng: np.random.Generator, n: int, size: int, diam_frac: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """RF diameters (px) and centres (row, col) such that each RF lies inside the image."""
    diam = rng.uniform(*diam_frac, n) * size
    r = np.minimum(diam / 2, size / 2)
    centre = np.stack([rng.uniform(r, size - r), rng.uniform(r, size - r)], 1)
    return centre, diam


class NeuronGroup:
    """Units of one type. Subclasses set centre_yx (n, 2), diameter_px (n,) and implement drive()."""

    type_name = ""
    needs_amp = False
    needs_blob = False
    selective = False  # True: Population thresholds the drive so few natural images exceed it

    def __init__(self, n: int, size: int, colour: bool, rng: np.random.Generator, diam_frac: tuple[float, float]):
        self.n, self.size, self.colour = n, size, colour
        self.centre_yx, self.diameter_px = place_rfs(rng, n, size, diam_frac)

    def drive(self, feats: Features) -> torch.Tensor:  # (B, n)
        raise NotImplementedError

    def describe(self, i: int) -> dict:
        return {}


# ----------------------------------------------------------------------------- types


class OrientedUnits(NeuronGroup):
    """Complex cells: orientation energy at one scale, pooled over a Gaussian RF.

    Energy at the orthogonal orientation subtracts (cross-orientation
    suppression), so a strongly anti-preferred image drives below baseline.
    """

    type_name = "oriented"
    needs_amp = True

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        super().__init__(n, size, colour, rng, diam_frac)
        self.orientation = rng.uniform(0, np.pi, n)
        self.scale = rng.integers(0, len(bank.wavelengths_px), n)
        self.wavelength_px = np.array([bank.wavelengths_px[s] for s in self.scale])
        self.kappa = rng.uniform(1.5, 4.0, n)  # orientation bandwidth (half-width about 25-40 deg)
        self.cross_suppression = rng.uniform(0.1, 0.5, n)
        w = orientation_weights(self.orientation, self.kappa)
        w_orth = orientation_weights(self.orientation + np.pi / 2, self.kappa)
        self.weights = torch.tensor(w - self.cross_suppression[:, None] * w_orth, dtype=torch.float32)
        self.window = gaussian_windows(self.centre_yx, self.diameter_px / 4, size)  # (n, S*S)

    def drive(self, feats):
        b = feats.amp.shape[0]
        pooled = feats.amp.reshape(b, feats.amp.shape[1], -1) @ self.window.T  # (B, channels, n)
        chans = torch.as_tensor(self.scale)[:, None] * N_ORIENT + torch.arange(N_ORIENT)[None]  # (n, O)
        per_neuron = pooled[:, chans, torch.arange(self.n)[:, None]]  # (B, n, O)
        return (per_neuron * self.weights).sum(-1)

    def describe(self, i):
        return {
            "orientation_deg": float(np.degrees(self.orientation[i])),
            "wavelength_px": float(self.wavelength_px[i]),
            "cross_suppression": float(self.cross_suppression[i]),
        }


class CurvatureUnits(NeuronGroup):
    """Contour-fragment units: a curved contour of one curvature and angular position.

    The template is K points along an arc, each wanting orientation energy
    tangent to the arc; a geometric mean makes it a soft AND, so a straight bar
    that matches only part of the arc drives the unit weakly. The template is
    tried at a 3x3 grid of positions in the RF (V4's position invariance) and the
    best RF-weighted position counts.
    """

    type_name = "curvature"
    needs_amp = True
    n_points = 5

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        super().__init__(n, size, colour, rng, diam_frac)
        self.scale = rng.integers(0, 2, n)  # the finer two scales: contours are thin
        lam = np.array([bank.wavelengths_px[s] for s in self.scale])
        self.wavelength_px = lam
        self.turning_deg = rng.uniform(40, 160, n)  # total change of tangent angle along the arc
        self.direction = rng.uniform(0, 2 * np.pi, n)  # where the arc's convex side points
        arc_len = np.minimum(0.8 * self.diameter_px, 4 * lam)
        turning = np.radians(self.turning_deg)
        self.radius_px = arc_len / turning
        k = np.arange(self.n_points) - (self.n_points - 1) / 2
        shifts = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float64)
        idx = np.zeros((n, len(shifts), self.n_points), np.int64)
        rf_weight = np.zeros((n, len(shifts)))
        tangents = np.zeros((n, self.n_points))
        for i in range(n):
            ang = self.direction[i] + k * turning[i] / (self.n_points - 1)
            # Arc points relative to the arc's middle point, which sits at the template position.
            py = self.radius_px[i] * (np.sin(ang) - np.sin(self.direction[i]))
            px = self.radius_px[i] * (np.cos(ang) - np.cos(self.direction[i]))
            tangents[i] = np.arctan2(np.cos(ang), -np.sin(ang)) % np.pi  # stripe orientation along the arc
            step = self.diameter_px[i] / 6
            for j, (dy, dx) in enumerate(shifts):
                cy, cx = self.centre_yx[i] + step * np.array([dy, dx])
                yy = np.clip(np.rint(cy + py), 0, size - 1).astype(np.int64)
                xx = np.clip(np.rint(cx + px), 0, size - 1).astype(np.int64)
                idx[i, j] = yy * size + xx
                rf_weight[i, j] = np.exp(-(dy**2 + dx**2) * step**2 / (2 * (self.diameter_px[i] / 4) ** 2))
        self.tangent_rad = tangents
        self.point_index = torch.as_tensor(idx)
        self.rf_weight = torch.tensor(rf_weight, dtype=torch.float32)
        ow = orientation_weights(tangents.reshape(-1), 3.0).reshape(n, self.n_points, N_ORIENT)
        self.orient_weights = torch.tensor(ow, dtype=torch.float32)
        self.chans = torch.as_tensor(self.scale)[:, None] * N_ORIENT + torch.arange(N_ORIENT)[None]  # (n, O)

    def drive(self, feats):
        b, _, s, _ = feats.amp.shape
        flat = feats.amp.reshape(b, -1, s * s)
        # (B, n, O, S*S) -> sample the template points: (B, n, shifts, K, O)
        a = flat[:, self.chans]  # (B, n, O, S*S)
        n, n_shift, k = self.point_index.shape
        gathered = torch.gather(a, 3, self.point_index.reshape(1, n, 1, -1).expand(b, n, N_ORIENT, -1))
        gathered = gathered.reshape(b, n, N_ORIENT, n_shift, k).permute(0, 1, 3, 4, 2)
        energy = (gathered * self.orient_weights[None, :, None]).sum(-1)  # (B, n, shifts, K)
        soft_and = torch.exp(torch.log(energy + 1e-4).mean(-1))
        return (soft_and * self.rf_weight).amax(-1)

    def describe(self, i):
        return {
            "turning_deg": float(self.turning_deg[i]),
            "convex_direction_deg": float(np.degrees(self.direction[i])),
            "radius_px": float(self.radius_px[i]),
            "wavelength_px": float(self.wavelength_px[i]),
        }


class DotUnits(NeuronGroup):
    """Small-blob detectors: the weaker principal curvature of the image (scale-normalized
    Hessian) at one scale and polarity, best position in the RF.

    Straight lines and edges have one principal curvature of zero, elongated blobs
    a small one, so these units prefer compact dots to bars.
    """

    type_name = "dot"
    needs_blob = True

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        super().__init__(n, size, colour, rng, diam_frac)
        self.scale = rng.integers(0, len(bank.dot_sigmas_px), n)
        self.dot_sigma_px = np.array([bank.dot_sigmas_px[s] for s in self.scale])
        self.dark = rng.random(n) < 0.4
        self.channel = torch.as_tensor(self.scale * 2 + self.dark.astype(np.int64))
        self.window = gaussian_windows(self.centre_yx, self.diameter_px / 4, size, peak_one=True)

    def drive(self, feats):
        b, _, s, _ = feats.blob.shape
        maps = feats.blob.reshape(b, -1, s * s)[:, self.channel]  # (B, n, S*S)
        return (maps * self.window).amax(-1)

    def describe(self, i):
        return {
            "polarity": "dark" if self.dark[i] else "bright",
            "dot_diameter_px": float(2 * self.dot_sigma_px[i] * 1.414),
        }


class TextureUnits(NeuronGroup):
    """Texture statistics: the spectral shape (share of energy per orientation and scale) over a large RF.

    Each unit prefers one shape (e.g. fine isotropic grain, coarse cross-hatch,
    one dominant orientation); the drive is the RF's total energy times a cosine
    tuning to that shape, so it is contrast-driven but texture-selective.
    """

    type_name = "texture"
    needs_amp = True

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        lo, hi = diam_frac
        super().__init__(n, size, colour, rng, (min(1.0, lo * 1.4), min(1.0, hi * 1.4)))
        n_sc = len(bank.wavelengths_px)
        prefs = np.zeros((n, n_sc, N_ORIENT))
        self.n_orientation_peaks = rng.integers(0, 3, n)  # 0: isotropic, 1: one orientation, 2: cross-hatch
        self.pref_scale = rng.uniform(0, n_sc - 1, n)
        for i in range(n):
            scale_prof = np.exp(-((np.arange(n_sc) - self.pref_scale[i]) ** 2) / (2 * 0.6**2))
            if self.n_orientation_peaks[i] == 0:
                orient_prof = np.ones(N_ORIENT)
            else:
                peaks = rng.uniform(0, np.pi) + np.arange(self.n_orientation_peaks[i]) * rng.uniform(
                    np.pi / 4, np.pi / 2
                )
                orient_prof = orientation_weights(peaks, 2.0).sum(0)
            prefs[i] = scale_prof[:, None] * orient_prof[None]
        prefs = prefs.reshape(n, -1)
        self.preferred_shape = torch.tensor(prefs / np.linalg.norm(prefs, axis=1, keepdims=True), dtype=torch.float32)
        self.sharpness = rng.uniform(4.0, 8.0, n)
        self.window = gaussian_windows(self.centre_yx, self.diameter_px / 4, size)

    def drive(self, feats):
        b = feats.amp.shape[0]
        pooled = (feats.amp.reshape(b, feats.amp.shape[1], -1) @ self.window.T).transpose(1, 2)  # (B, n, channels)
        total = pooled.sum(-1)
        cos = (pooled * self.preferred_shape).sum(-1) / (pooled.norm(dim=-1) + 1e-8)
        return total * torch.exp(torch.as_tensor(self.sharpness, dtype=torch.float32) * (cos - 1))

    def describe(self, i):
        kind = ("isotropic", "oriented", "cross-hatch")[int(self.n_orientation_peaks[i])]
        return {"texture": kind, "preferred_scale": float(self.pref_scale[i])}


class ColourUnits(NeuronGroup):
    """Single-opponent hue units: mean colour in the RF projected on a preferred hue direction.

    Signed: the opposite hue drives below baseline. In a grey rig there is no
    hue, and the same units prefer a luminance polarity (brighter or darker than grey).
    """

    type_name = "colour"

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        super().__init__(n, size, colour, rng, diam_frac)
        self.hue = rng.uniform(0, 2 * np.pi, n)
        self.bright = rng.random(n) < 0.5
        self.window = gaussian_windows(self.centre_yx, self.diameter_px / 4, size)
        # Opponent axes: red-green (R - G) and blue-yellow (B - (R + G) / 2), equal length.
        opp = np.array([[1.0, -1.0, 0.0], [-0.5, -0.5, 1.0]])
        opp /= np.linalg.norm(opp, axis=1, keepdims=True)
        if colour:
            w = np.cos(self.hue)[:, None] * opp[0] + np.sin(self.hue)[:, None] * opp[1]
        else:
            w = np.where(self.bright, 1.0, -1.0)[:, None] * np.array(LUMA)[None]
        self.colour_weights = torch.tensor(w, dtype=torch.float32)  # (n, 3)

    def drive(self, feats):
        b = feats.rgb.shape[0]
        mean_rgb = feats.rgb.reshape(b, 3, -1) @ self.window.T  # (B, 3, n)
        signal = mean_rgb - 0.5 if not self.colour else mean_rgb
        return torch.einsum("bcn,nc->bn", signal, self.colour_weights)

    def describe(self, i):
        if self.colour:
            return {"hue_deg": float(np.degrees(self.hue[i]) % 360)}
        return {"polarity": "bright" if self.bright[i] else "dark"}


class RandomCNNUnits(NeuronGroup):
    """Units read out from a frozen, randomly initialized deep CNN.

    Deliberately unlike the compact models that models/ fits (5x5 convolutions,
    batch norm, ReLU, dense readout): 7x7 then dilated 3x3 kernels, ELU,
    full-wave rectification, divisive channel normalization, max pooling and a
    Gaussian readout with a few signed channel weights. A fitted model has to
    learn this function, not recognize its own architecture.
    """

    type_name = "cnn"

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank, seed: int):
        super().__init__(n, size, colour, rng, diam_frac)
        g = torch.Generator().manual_seed(seed)

        def kernels(c_out, c_in, k):
            w = torch.randn(c_out, c_in, k, k, generator=g)
            w = w - w.mean(dim=(2, 3), keepdim=True)  # spatial structure only: uniform fields give zero
            return w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

        self.w1 = kernels(16, 3, 7)
        self.w2 = kernels(16, 16, 3) * 2.0
        self.w3 = torch.randn(32, 16, 3, 3, generator=g) / math.sqrt(16 * 9) * 3.0
        self.b3 = torch.randn(32, generator=g) * 0.1
        with torch.no_grad():
            self.map_size = self.feature_map(torch.full((1, 3, size, size), 0.5)).shape[-1]
        step = size / self.map_size
        centres = (self.centre_yx + 0.5) / step - 0.5
        self.window = gaussian_windows(centres, np.maximum(self.diameter_px / (4 * step), 0.5), self.map_size)
        readout = np.zeros((n, 32))
        for i in range(n):
            chans = rng.choice(32, 3, replace=False)
            readout[i, chans] = rng.normal(0, 1, 3)
            readout[i, chans[np.argmax(np.abs(readout[i, chans]))]] = abs(readout[i, chans]).max() + 0.5
        self.readout = torch.tensor(readout, dtype=torch.float32)
        # A blank (mid-grey) screen must give baseline: its readout is the zero point.
        with torch.no_grad():
            self.grey_drive = self._readout(self.feature_map(torch.full((1, 3, size, size), 0.5)))[0]
            # Random readouts are as likely to be pushed down by image structure as up; flip
            # each unit so that natural images drive it on average (like a recorded, visually
            # responsive neuron), keeping the signed rest as suppression.
            probe = natural_patches(32, size, True, seed + 1)
            rgb = torch.from_numpy(probe.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
            if not colour:
                rgb = rgb.mean(1, keepdim=True).expand(-1, 3, -1, -1)
            sign = torch.sign(self.drive(Features(rgb, None, None)).mean(0))
            sign[sign == 0] = 1.0
            self.readout *= sign[:, None]
            self.grey_drive *= sign

    def feature_map(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb - 0.5
        # Stride 2 in the first layer keeps the network cheap; max pooling follows later.
        x = F.elu(F.conv2d(x, self.w1, padding=3, stride=2) * 4.0)
        x = F.conv2d(x, self.w2, padding=2, dilation=2).abs()
        x = x / (0.2 + x.mean(1, keepdim=True))
        x = F.max_pool2d(x, 2)
        return F.softplus(F.conv2d(x, self.w3, self.b3, padding=1))

    def _readout(self, fm: torch.Tensor) -> torch.Tensor:
        pooled = fm.reshape(fm.shape[0], fm.shape[1], -1) @ self.window.T  # (B, 32, n)
        return torch.einsum("bcn,nc->bn", pooled, self.readout)

    def drive(self, feats):
        return self._readout(self.feature_map(feats.rgb)) - self.grey_drive

    def describe(self, i):
        return {"channels": [int(c) for c in np.flatnonzero(self.readout[i].numpy())]}


# ----------------------------------------------------------------------------- selective types
# Units that respond to few natural images. Each is a conjunction or a narrowly tuned version of a feature
# above; Population thresholds their drive so that only `population.sparseness` of natural calibration
# patches exceed it (`selective = True`), and their gain is calibrated on the best natural patch.


class ConjunctionUnits(NeuronGroup):
    """Colour-and-orientation conjunction: oriented energy at one scale in the RF AND the RF's mean colour along
    one hue axis (luminance polarity in a grey rig), combined by a geometric mean, so either alone drives the
    unit weakly: a contour of one orientation on a surface of one hue."""

    type_name = "conjunction"
    needs_amp = True
    selective = True

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        super().__init__(n, size, colour, rng, diam_frac)
        self.orientation = rng.uniform(0, np.pi, n)
        self.scale = rng.integers(0, len(bank.wavelengths_px), n)
        self.wavelength_px = np.array([bank.wavelengths_px[s] for s in self.scale])
        self.weights = torch.tensor(orientation_weights(self.orientation, 4.0), dtype=torch.float32)
        self.hue = rng.uniform(0, 2 * np.pi, n)
        self.bright = rng.random(n) < 0.5
        opp = np.array([[1.0, -1.0, 0.0], [-0.5, -0.5, 1.0]])
        opp /= np.linalg.norm(opp, axis=1, keepdims=True)
        if colour:
            w = np.cos(self.hue)[:, None] * opp[0] + np.sin(self.hue)[:, None] * opp[1]
        else:
            w = np.where(self.bright, 1.0, -1.0)[:, None] * np.array(LUMA)[None]
        self.colour_weights = torch.tensor(w, dtype=torch.float32)
        self.window = gaussian_windows(self.centre_yx, self.diameter_px / 4, size)

    def drive(self, feats):
        b = feats.amp.shape[0]
        pooled = feats.amp.reshape(b, feats.amp.shape[1], -1) @ self.window.T  # (B, channels, n)
        chans = torch.as_tensor(self.scale)[:, None] * N_ORIENT + torch.arange(N_ORIENT)[None]
        energy = (pooled[:, chans, torch.arange(self.n)[:, None]] * self.weights).sum(-1)  # (B, n) >= 0
        mean_rgb = feats.rgb.reshape(b, 3, -1) @ self.window.T  # (B, 3, n)
        signal = mean_rgb if self.colour else mean_rgb - 0.5
        hue = torch.clamp(torch.einsum("bcn,nc->bn", signal, self.colour_weights), min=0.0)
        return torch.sqrt(energy.clamp(min=0.0) * hue + 1e-12)

    def describe(self, i):
        out = {"orientation_deg": float(np.degrees(self.orientation[i])), "wavelength_px": float(self.wavelength_px[i])}
        if self.colour:
            out["hue_deg"] = float(np.degrees(self.hue[i]) % 360)
        else:
            out["polarity"] = "bright" if self.bright[i] else "dark"
        return out


class SparseCurvatureUnits(CurvatureUnits):
    """Curvature at one position: a longer arc template (7 points, a stricter soft AND) at the RF's centre only,
    with no tolerance to position, in a smaller RF than the curvature type's."""

    type_name = "sparse_curvature"
    selective = True
    n_points = 7

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        lo, hi = diam_frac
        super().__init__(n, size, colour, rng, (max(0.05, lo * 0.7), max(0.05, hi * 0.7)), bank)
        centre = 4  # the middle of the 3x3 grid of template positions
        self.point_index = self.point_index[:, centre : centre + 1].contiguous()
        self.rf_weight = self.rf_weight[:, centre : centre + 1].contiguous()


class SparseTextureUnits(TextureUnits):
    """A sparse texture preference: the texture type's spectral-shape tuning, three to four times sharper, so
    only textures close to the preferred shape drive the unit."""

    type_name = "sparse_texture"
    selective = True

    def __init__(self, n, size, colour, rng, diam_frac, bank: FeatureBank):
        super().__init__(n, size, colour, rng, diam_frac, bank)
        self.sharpness = rng.uniform(16.0, 32.0, n)


GROUP_CLASSES = {
    c.type_name: c
    for c in (
        OrientedUnits,
        CurvatureUnits,
        DotUnits,
        TextureUnits,
        ColourUnits,
        RandomCNNUnits,
        ConjunctionUnits,
        SparseCurvatureUnits,
        SparseTextureUnits,
    )
}


# ----------------------------------------------------------------------------- calibration images

# Natural colour and grey photographs shipped with scikit-image (no download).
CALIBRATION_SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
)


@lru_cache(maxsize=None)
def _load(name: str) -> np.ndarray | None:
    from skimage import data as skdata

    try:
        img = np.asarray(getattr(skdata, name)())
    except Exception:  # a loader that needs an optional download
        return None
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3].astype(np.uint8)


def natural_patches(n: int, size_px: int, colour: bool, seed: int) -> np.ndarray:
    """(n, S, S, 3 or 1) uint8 natural patches, used to calibrate each neuron's gain."""
    rng = np.random.default_rng(seed)
    sources = [s for s in (_load(name) for name in CALIBRATION_SOURCES) if s is not None]
    out = np.zeros((n, size_px, size_px, 3), np.uint8)
    for i in range(n):
        src = sources[rng.integers(len(sources))]
        h, w = src.shape[:2]
        side = int(rng.integers(max(16, min(h, w) // 8), max(17, min(h, w) // 2)))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = torch.from_numpy(src[y : y + side, x : x + side].astype(np.float32)).permute(2, 0, 1)[None]
        crop = F.interpolate(crop, size=(size_px, size_px), mode="bilinear", antialias=True, align_corners=False)
        out[i] = np.clip(np.rint(crop[0].permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)
    if not colour:
        return np.clip(np.rint(out.astype(np.float32) @ np.array(LUMA, np.float32)), 0, 255).astype(np.uint8)[..., None]
    return out
