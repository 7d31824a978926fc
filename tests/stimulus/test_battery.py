"""The in-silico battery on neurons whose tuning is known in closed form.

An energy unit: the squared magnitude of the image's projection on one complex (quadrature) Gabor of
wavelength L and envelope sigma. A full-field grating of orientation difference d and the same wavelength
gives an amplitude of exp(-2 pi^2 sigma^2 |k - k0|^2) with |k - k0|^2 = (2 / L^2)(1 - cos d), so the energy
falls to half at 1 - cos d = ln 2 L^2 / (8 pi^2 sigma^2): the half-width at half-height is known before the
battery runs. A hue unit, linear in the mean colour along one opponent direction, peaks at that hue.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stimulus.battery import (
    EXPERIMENTS,
    LUMA,
    OPPONENT,
    Experiment,
    Probe,
    Result,
    curve_correlations,
    half_width,
    load_experiment,
    resolve,
    run_battery,
)
from stimulus.fingerprint import fingerprint, in_words, type_neuron

S = 32
PREF_DEG = 40.0
WAVELENGTH = float(np.geomspace(2.5, S, 8)[5])  # one of the gratings' wavelengths
SIGMA = 0.35 * WAVELENGTH


def analytic_half_width_deg(wavelength: float, sigma: float) -> float:
    return math.degrees(math.acos(1 - math.log(2) * wavelength**2 / (8 * math.pi**2 * sigma**2)))


class GaborEnergy:
    """rate = 5 + 60 * |<luminance - 0.5, complex Gabor>|^2 / |<optimal grating, Gabor>|^2 (spikes/s)."""

    joint = False

    def __init__(self, pref_deg=PREF_DEG, wavelength=WAVELENGTH, sigma=SIGMA):
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
        c = (S - 1) / 2
        phi = math.radians(pref_deg)
        u = -(xx - c) * math.sin(phi) + (yy - c) * math.cos(phi)  # the battery's convention: stripes along phi
        env = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * sigma**2))
        kern = env * np.exp(2j * math.pi * u / wavelength)
        self.kernel = kern - env * (kern.sum() / env.sum())  # no response to a uniform field
        self.norm = abs((0.5 * np.cos(2 * math.pi * u / wavelength) * self.kernel).sum()) ** 2

    def __call__(self, images, neurons):
        lum = images @ LUMA - 0.5
        energy = np.abs((lum * self.kernel).sum((1, 2))) ** 2 / self.norm
        return np.repeat((5 + 60 * energy)[:, None], len(neurons), 1)


class HueUnit:
    """rate = 4 + 200 * max(0, mean colour in a central disc . opponent direction of hue_deg)."""

    joint = True

    def __init__(self, hue_deg: float):
        h = math.radians(hue_deg)
        self.w = math.cos(h) * OPPONENT[0] + math.sin(h) * OPPONENT[1]
        yy, xx = np.mgrid[0:S, 0:S]
        self.disc = np.hypot(yy - S / 2, xx - S / 2) < S / 4

    def __call__(self, images, neurons):
        mean = images[:, self.disc].mean(1)  # (B, 3)
        return np.repeat((4 + 200 * np.clip(mean @ self.w, 0, None))[:, None], len(neurons), 1)


def _run(responder, names=None):
    (nb,) = run_battery(responder, [0], Probe(S, True, 4.0 / S), resolve(names))
    return nb


def test_an_energy_unit_has_its_closed_form_orientation_tuning():
    nb = _run(GaborEnergy(), ["gratings", "position", "size", "bars", "curvature", "dots", "hue", "texture"])
    fp = fingerprint(nb, 4.0 / S)
    assert abs(fp["preferred_orientation_deg"] - PREF_DEG) < 2.0
    want = analytic_half_width_deg(WAVELENGTH, SIGMA)
    assert 15 < want < 45
    assert abs(fp["orientation_bandwidth_deg"] - want) < 3.0, (fp["orientation_bandwidth_deg"], want)
    assert abs(math.log2(fp["preferred_wavelength_px"] / WAVELENGTH)) < 0.3
    # The curve is the closed form itself, sampled: averaged over phase, the energy is proportional to
    # G(k - k0)^2 + G(k + k0)^2 with G(q) = exp(-2 pi^2 sigma^2 |q|^2), |k -+ k0|^2 = (2 / L^2)(1 -+ cos d).
    curve = nb.results["gratings"].curves["orientation"]
    d = np.radians(np.asarray(curve.x) - PREF_DEG)
    g = lambda c: np.exp(-4 * math.pi**2 * SIGMA**2 * 2 * (1 - c) / WAVELENGTH**2)  # noqa: E731
    closed = g(np.cos(d)) + g(-np.cos(d))
    assert np.corrcoef(curve.y, closed)[0, 1] > 0.99
    assert abs(fp["rf_centre_row_px"] - (S - 1) / 2) < 2 and abs(fp["rf_centre_col_px"] - (S - 1) / 2) < 2
    family, _ = type_neuron(fp)
    assert family == "oriented"
    assert "preferred 40 deg" in in_words(fp, family)


def test_the_orientation_estimate_moves_with_the_unit():
    """Not a constant: another preferred orientation is found as such (the convention is the stimuli's)."""
    nb = _run(GaborEnergy(pref_deg=110.0), ["gratings"])
    assert abs(nb.results["gratings"].features["preferred_orientation_deg"] - 110.0) < 2.0


def test_a_hue_unit_is_typed_colour_at_its_hue():
    nb = _run(HueUnit(120.0), ["gratings", "position", "dots", "hue", "hue_gratings", "texture"])
    fp = fingerprint(nb, 4.0 / S)
    assert abs(fp["preferred_hue_deg"] - 120.0) < 3.0
    assert type_neuron(fp)[0] == "colour"


def test_half_width_of_a_sampled_von_mises():
    x = np.arange(0.0, 180.0, 15.0)
    y = np.exp(3 * (np.cos(np.radians(2 * (x - 60))) - 1))
    # exp(3 (cos 2d - 1)) = 1/2 at cos 2d = 1 - ln 2 / 3
    want = math.degrees(math.acos(1 - math.log(2) / 3)) / 2
    assert abs(half_width(x, y, 180.0) - want) < 3.0


def test_following_a_run_shows_the_same_stimuli(monkeypatch):
    """The truth measured on the model's stimuli: the followed probes are used, so curves line up."""
    seen = []

    def stimuli(p: Probe):
        seen.append(p.orientation_deg)
        return EXPERIMENTS["bars"].stimuli(p)

    exp = Experiment("bars_probe", stimuli, EXPERIMENTS["bars"].analyse)
    first = run_battery(GaborEnergy(pref_deg=40.0), [0], Probe(S), [EXPERIMENTS["gratings"], exp])
    other = run_battery(GaborEnergy(pref_deg=100.0), [0], Probe(S), [EXPERIMENTS["gratings"], exp], follow=first)
    assert seen[0] == seen[1] == 45.0  # the first run's best grid orientation, used by the second too
    rs = curve_correlations(first[0], other[0])
    assert set(rs) == {"orientation", "spatial_frequency", "bar_length"}


def custom_experiment() -> Experiment:
    """A lab's own experiment, named by import path: the mean luminance step."""

    def stimuli(p: Probe):
        from stimulus.battery import Stimuli

        return Stimuli(np.stack([np.full((p.size_px, p.size_px, 3), v) for v in (0.3, 0.7)]), [{}, {}])

    return Experiment("luminance_step", stimuli, lambda st, ev, p: Result(features={"step_hz": float(ev[1] - ev[0])}))


def test_a_lab_adds_an_experiment_by_import_path():
    exp = load_experiment(f"{__name__}:custom_experiment")
    nb = _run(HueUnit(0.0), ["hue", f"{__name__}:custom_experiment"])
    assert exp.name in nb.results and "step_hz" in nb.results["luminance_step"].features
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_experiment("no_such_module_here:thing")
    with pytest.raises(ValueError, match="unknown experiment"):
        resolve(["no_such_experiment"])
