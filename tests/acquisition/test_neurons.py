"""The virtual cortex's neurons: each type prefers its own stimulus; rates are realistic; custom types load."""

import numpy as np
import pytest

from acquisition.config import PopulationConfig
from acquisition.neurons import natural_patches
from acquisition.population import Population, split_counts

S = 32


def pop(kind: str, n: int = 6, seed: int = 3, colour: bool = True) -> Population:
    return Population(
        PopulationConfig(n_neurons=n, type_shares={kind: 1.0}, seed=seed, calibration_images=64), S, colour
    )


def grey(n: int = 1) -> np.ndarray:
    return np.full((n, S, S, 3), 0.5, np.float32)


def coords():
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    return yy, xx


def grating(orient_rad, wavelength, centre, radius, contrast=0.9):
    """Stripes running along (cos, sin) of orient_rad (x right, y down), inside a disk."""
    yy, xx = coords()
    u = (xx - centre[1]) * -np.sin(orient_rad) + (yy - centre[0]) * np.cos(orient_rad)
    disk = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2
    lum = 0.5 + 0.5 * contrast * np.cos(2 * np.pi * u / wavelength) * disk
    return np.repeat(lum[..., None], 3, -1).astype(np.float32)


def test_oriented_units_are_tuned_to_orientation():
    p = pop("oriented")
    g = p.groups[0]
    for i in range(g.n):
        angles = np.radians(np.arange(0, 180, 15))
        imgs = np.stack([grating(a, g.wavelength_px[i], g.centre_yx[i], g.diameter_px[i] / 2) for a in angles])
        r = p.rates(imgs)[:, i]
        best = angles[np.argmax(r)]
        err = np.degrees(np.abs((best - g.orientation[i] + np.pi / 2) % np.pi - np.pi / 2))
        assert err <= 22.5, (i, np.degrees(g.orientation[i]), np.degrees(best))
        orth = grating(g.orientation[i] + np.pi / 2, g.wavelength_px[i], g.centre_yx[i], g.diameter_px[i] / 2)
        pref = grating(g.orientation[i], g.wavelength_px[i], g.centre_yx[i], g.diameter_px[i] / 2)
        rp, ro = p.rates(np.stack([pref, orth]))[:, i]
        assert rp > 2 * ro and rp > p.baseline_hz[i] + 10


def test_oriented_unit_ignores_a_grating_outside_its_rf():
    p = pop("oriented", n=20)
    g = p.groups[0]
    # The smallest RF whose mirror point (across the image centre) lies well outside it.
    far_from = lambda i: (S - 1 - g.centre_yx[i][0], S - 1 - g.centre_yx[i][1])  # noqa: E731
    usable = [
        i
        for i in np.argsort(g.diameter_px)
        if np.hypot(*(np.array(far_from(i)) - g.centre_yx[i])) >= g.diameter_px[i] * 1.2
    ]
    assert usable, "no unit has an RF off-centre enough for this check"
    i = int(usable[0])
    far = far_from(i)
    inside = grating(g.orientation[i], g.wavelength_px[i], g.centre_yx[i], g.diameter_px[i] / 2)
    outside = grating(g.orientation[i], g.wavelength_px[i], far, g.diameter_px[i] / 3)
    r_in, r_out = p.rates(np.stack([inside, outside]))[:, i]
    assert r_in > r_out + 10


def arc_image(g, i, straight=False):
    """Draw unit i's preferred contour (or a straight bar along its middle tangent) as a thin bright line."""
    yy, xx = coords()
    img = np.zeros((S, S))
    cy, cx = g.centre_yx[i]
    lam = g.wavelength_px[i]
    width = lam / 4
    direction = g.direction[i]
    turning = np.radians(g.turning_deg[i])
    r = g.radius_px[i]
    ts = np.linspace(-0.5, 0.5, 200)
    if straight:
        tangent = np.array([-np.sin(direction), np.cos(direction)])  # (x, y)
        length = r * turning
        pts = [(cx + t * length * tangent[0], cy + t * length * tangent[1]) for t in ts]
    else:
        pts = []
        for t in ts:
            a = direction + t * turning
            pts.append((cx + r * (np.cos(a) - np.cos(direction)), cy + r * (np.sin(a) - np.sin(direction))))
    for px, py in pts:
        img = np.maximum(img, np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * width**2)))
    lum = 0.5 + 0.45 * img
    return np.repeat(lum[..., None], 3, -1).astype(np.float32)


def test_curvature_units_prefer_their_curve_to_a_straight_bar():
    p = pop("curvature", n=8)
    g = p.groups[0]
    wins = 0
    for i in range(g.n):
        r_curve, r_bar = p.rates(np.stack([arc_image(g, i), arc_image(g, i, straight=True)]))[:, i]
        wins += r_curve > r_bar
    assert wins >= 7, wins  # contours at the image border may be clipped for one unit


def dot_image(centre, radius, bright=True, contrast=0.15):
    yy, xx = coords()
    d = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * radius**2))
    lum = 0.5 + (contrast if bright else -contrast) * d
    return np.repeat(lum[..., None], 3, -1).astype(np.float32)


def bar_image(centre, radius, orient_rad, bright=True, half_length=None, contrast=0.15):
    """A bar through centre; with half_length, its ends fade out smoothly there."""
    yy, xx = coords()
    u = (xx - centre[1]) * -np.sin(orient_rad) + (yy - centre[0]) * np.cos(orient_rad)
    v = (xx - centre[1]) * np.cos(orient_rad) + (yy - centre[0]) * np.sin(orient_rad)
    d = np.exp(-(u**2) / (2 * radius**2))
    if half_length is not None:
        d = d * np.clip((half_length - np.abs(v)) / radius, 0, 1)
    lum = 0.5 + (contrast if bright else -contrast) * d
    return np.repeat(lum[..., None], 3, -1).astype(np.float32)


def test_dot_units_prefer_a_dot_to_a_bar_and_have_a_polarity():
    # Small RFs, so that bars can end (smoothly) well outside the RF yet inside the image:
    # an image border cuts a bar off sharply, and a cut-off bar end is a blob.
    p = Population(
        PopulationConfig(
            n_neurons=16, type_shares={"dot": 1.0}, seed=3, calibration_images=64, rf_size_frac=(0.15, 0.2)
        ),
        S,
        True,
    )
    g = p.groups[0]
    tested = 0
    for i in range(g.n):
        c, rad, bright = g.centre_yx[i], g.dot_sigma_px[i], not g.dark[i]
        length = 0.9 * min(c[0], c[1], S - 1 - c[0], S - 1 - c[1])  # bar half-length, ends inside the image
        if length < 1.5 * g.diameter_px[i]:
            continue
        imgs = [
            dot_image(c, rad, bright),
            bar_image(c, rad, 0.0, bright, length),
            bar_image(c, rad, np.pi / 2, bright, length),
            dot_image(c, rad, not bright),
        ]
        r = p.rates(np.stack(imgs))[:, i] - p.baseline_hz[i]
        assert r[0] > 3 and r[0] > 2 * max(r[1], r[2]), (i, r)
        assert r[0] > 2 * r[3], (i, r)
        tested += 1
    assert tested >= 3


def filtered_noise(orient_profile_rad, wavelength, seed, contrast=0.35):
    """Noise texture whose energy sits at the given orientations and wavelength (all over the image)."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(S)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    rad = np.hypot(fx, fy)
    theta = np.arctan2(fy, fx)
    spec = np.exp(-(np.log(np.maximum(rad, 1e-6) * wavelength) ** 2) / (2 * 0.25**2))
    if orient_profile_rad is not None:
        # energy at wave-vector angle = stripe orientation + 90 deg
        o = sum(np.exp(3 * (np.cos(2 * (theta - (a + np.pi / 2))) - 1)) for a in orient_profile_rad)
        spec = spec * o
    noise = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(S, S))) * spec))
    noise = contrast * noise / (np.abs(noise).max() + 1e-9)
    return np.repeat((0.5 + noise)[..., None], 3, -1).astype(np.float32)


def test_texture_units_prefer_their_spectral_shape():
    p = pop("texture", n=10, seed=5)
    g = p.groups[0]
    bank = p.bank
    wins, total = 0, 0
    for i in range(g.n):
        shape = g.preferred_shape[i].numpy().reshape(len(bank.wavelengths_px), -1)
        s_best = int(np.argmax(shape.sum(1)))
        o_prof = shape[s_best]
        lam = bank.wavelengths_px[s_best]
        if g.n_orientation_peaks[i] == 0:
            pref = [None]
        else:
            pref = [[bank.orientations_rad[int(np.argmax(o_prof))]]]
        other_lam = bank.wavelengths_px[0] if s_best == 2 else bank.wavelengths_px[2]
        other_or = None if g.n_orientation_peaks[i] else [0.0]
        for seed in range(3):
            a = filtered_noise(pref[0], lam, seed)
            b = filtered_noise(other_or, other_lam, seed + 10)
            ra, rb = p.rates(np.stack([a, b]))[:, i]
            wins += ra > rb
            total += 1
    assert wins >= 0.8 * total, (wins, total)


def test_colour_units_are_hue_tuned_and_suppressed_by_the_opponent_hue():
    p = pop("colour", n=8)
    g = p.groups[0]
    opp = np.array([[1.0, -1.0, 0.0], [-0.5, -0.5, 1.0]])
    opp /= np.linalg.norm(opp, axis=1, keepdims=True)
    for i in range(g.n):
        direction = np.cos(g.hue[i]) * opp[0] + np.sin(g.hue[i]) * opp[1]
        pref = np.clip(0.5 + 0.45 * direction / np.abs(direction).max(), 0, 1)
        anti = np.clip(0.5 - 0.45 * direction / np.abs(direction).max(), 0, 1)
        imgs = np.stack([np.broadcast_to(c, (S, S, 3)) for c in (pref, anti, [0.5, 0.5, 0.5])]).astype(np.float32)
        r_pref, r_anti, r_grey = p.rates(imgs)[:, i]
        assert r_pref > r_grey + 5, (i, r_pref, r_grey)
        assert r_anti < r_grey - 0.2 * p.baseline_hz[i], (i, r_anti, r_grey)  # below baseline


def test_grey_screen_gives_baseline_for_every_type():
    p = Population(PopulationConfig(n_neurons=24, seed=2, calibration_images=64), S, True)
    r = p.rates(grey())[0]
    assert np.allclose(r, p.baseline_hz, rtol=0.05, atol=0.3)


def test_rates_are_realistic_on_natural_patches():
    p = Population(PopulationConfig(n_neurons=30, seed=1, calibration_images=128), S, True)
    assert np.all((p.baseline_hz >= 2) & (p.baseline_hz <= 10))
    imgs = natural_patches(300, S, True, seed=99)  # different patches than calibration
    r = p.rates(imgs)
    assert np.all(r >= 0) and np.all(r <= p.peak_hz + 1e-9)
    p99 = np.percentile(r, 99, axis=0)
    assert np.all(p99 > p.baseline_hz + 0.25 * (p.peak_hz - p.baseline_hz)), p99
    assert np.median(p99) > 30
    # Natural images do not saturate the neurons: optimized stimuli have room above them.
    assert np.all(np.percentile(r, 95, axis=0) < 0.95 * p.peak_hz)
    assert set(p.types) == {"oriented", "curvature", "dot", "texture", "colour", "cnn"}


def test_divisive_normalization_lowers_a_response_when_the_population_is_driven():
    weak = PopulationConfig(
        n_neurons=12, seed=4, type_shares={"oriented": 1.0}, calibration_images=64, normalization_strength=0.0
    )
    strong = weak.model_copy(update={"normalization_strength": 5.0})
    p0, p1 = Population(weak, S, True), Population(strong, S, True)
    imgs = natural_patches(64, S, True, seed=7)
    assert np.all(p1.rates(imgs) <= p0.rates(imgs) + 1e-9)
    assert np.mean(p1.rates(imgs)) < 0.9 * np.mean(p0.rates(imgs))


def test_cnn_units_are_deterministic_selective_and_not_constant():
    a = pop("cnn", n=6, seed=11)
    b = pop("cnn", n=6, seed=11)
    c = pop("cnn", n=6, seed=12)
    imgs = natural_patches(64, S, True, seed=5)
    ra, rb, rc = a.rates(imgs), b.rates(imgs), c.rates(imgs)
    assert np.array_equal(ra, rb)
    assert not np.allclose(ra, rc)
    assert np.all(ra.std(0) > 1.0)
    # Units of one network still differ from each other.
    corr = np.corrcoef(ra.T)
    assert np.max(np.abs(corr[np.triu_indices(6, 1)])) < 0.99


def test_type_shares_give_exact_counts_and_describe_is_complete():
    # Largest remainder: 5 + 2.5 + 2.5; the spare neuron goes to the tied type listed first in NEURON_TYPES.
    assert split_counts(10, {"oriented": 0.5, "dot": 0.25, "cnn": 0.25}) == {"oriented": 5, "dot": 3, "cnn": 2}
    # 3.15 + 2.45 + 1.4: the spare neuron goes to the largest remainder (dot), not the largest share.
    assert split_counts(7, {"oriented": 0.45, "dot": 0.35, "cnn": 0.2}) == {"oriented": 3, "dot": 3, "cnn": 1}
    # Shares are relative (need not sum to one), and a zero share gets no entry.
    assert split_counts(4, {"oriented": 2.0, "colour": 1.0, "dot": 0.0}) == {"oriented": 3, "colour": 1}
    # The Population builds exactly those groups, in NEURON_TYPES order.
    mixed = Population(
        PopulationConfig(
            n_neurons=10, type_shares={"cnn": 0.25, "oriented": 0.5, "dot": 0.25}, seed=0, calibration_images=16
        ),
        S,
        True,
    )
    assert [(g.type_name, g.n) for g in mixed.groups] == [("oriented", 5), ("dot", 3), ("cnn", 2)]
    p = Population(PopulationConfig(n_neurons=13, seed=0, calibration_images=32), S, True)
    d = p.describe()
    assert len(d) == p.n_neurons == 13
    for row in d:
        cy, cx = row["rf_centre_px"]
        r = row["rf_diameter_px"] / 2
        assert -1e-6 <= cy - r and cy + r <= S + 1e-6 and -1e-6 <= cx - r and cx + r <= S + 1e-6


def test_grey_rig_accepts_one_channel_images():
    p = Population(PopulationConfig(n_neurons=12, seed=0, calibration_images=32), S, False)
    imgs = natural_patches(16, S, False, seed=3)
    assert imgs.shape[-1] == 1
    r = p.rates(imgs)
    assert r.shape == (16, 12) and np.all(np.isfinite(r))
    assert np.allclose(p.rates(np.full((1, S, S, 1), 128, np.uint8))[0], p.baseline_hz, rtol=0.05, atol=0.3)


def test_uint8_and_float_images_agree():
    p = Population(PopulationConfig(n_neurons=8, seed=0, calibration_images=32), S, True)
    imgs = natural_patches(4, S, True, seed=3)
    assert np.allclose(p.rates(imgs), p.rates(imgs.astype(np.float32) / 255), rtol=1e-4, atol=1e-4)


def custom_path(fn: str) -> str:
    """The import path of tests/cortex_custom_neurons.py's `fn`: under the top `tests` package when this module is
    imported as tests.acquisition.test_neurons, else (tests/ on sys.path) a top-level module."""
    top = __name__.partition(".")[0] if "." in __name__ else ""
    return f"{top + '.' if top else ''}cortex_custom_neurons:{fn}"


def test_custom_neuron_type_loads_from_a_rig_file_like_config():
    from controller.config import parse_rig

    rig = parse_rig(
        {
            "cortex": {
                "population": {
                    "n_neurons": 4,
                    "calibration_images": 32,
                    "custom": [custom_path("brightness_and_redness")],
                }
            }
        }
    )
    p = Population(rig.cortex.population, S, True)
    assert p.n_neurons == 6 and p.types[-2:] == [f"custom:{custom_path('brightness_and_redness')}"] * 2
    white = np.ones((1, S, S, 3), np.float32)
    red = np.zeros((1, S, S, 3), np.float32)
    red[..., 0] = 1.0
    r = p.rates(np.concatenate([grey(), white, red]))
    assert np.isclose(p.baseline_hz[4], 24.0) and np.isclose(r[1, 4], 44.0)
    assert r[2, 5] > 60 and np.isclose(r[0, 5], 5.0)


def test_custom_neuron_type_errors_name_the_path():
    with pytest.raises(ValueError, match="no_such_module"):
        Population(PopulationConfig(n_neurons=1, custom=["no_such_module:f"], calibration_images=16), S, True)
    with pytest.raises(ValueError):
        PopulationConfig(custom=["not an import path"])
    with pytest.raises(ValueError):
        PopulationConfig(type_shares={"grandmother": 1.0})
