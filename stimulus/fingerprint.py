"""A neuron's fingerprint from its in-silico battery (stimulus/battery.py), its type, and the two in words.

The fingerprint is the battery's features in one flat dict (preferred values, tuning widths, selectivity
indices, invariances; units in the key names) plus each experiment's drive relative to the neuron's largest
(`drive_*`, 0-1). The typing names one of the families the battery can tell apart, or "unexplained" where no
family's signature is clear (a neuron the battery barely drives, or one driven by everything alike, such as a
unit of a random deep network). The rules are few and each is written below with its reason; they were set on
the ground-truth neurons of a population drawn with another seed than any rig file's, then left alone.
"""

from __future__ import annotations

import math

from stimulus.battery import NeuronBattery

FAMILIES = ("oriented", "curvature", "dot", "texture", "colour", "conjunction", "unexplained")
# The virtual cortex's neuron types as the families the battery can name; a random-CNN unit or a custom type
# has no parametric signature, so "unexplained" is the right answer for it.
TRUE_FAMILY = {
    "oriented": "oriented",
    "curvature": "curvature",
    "sparse_curvature": "curvature",
    "dot": "dot",
    "texture": "texture",
    "sparse_texture": "texture",
    "colour": "colour",
    "conjunction": "conjunction",
    "cnn": "unexplained",
}
DRIVES = {
    "grating": "grating_max_hz",
    "contour": "contour_max_hz",
    "dot": "dot_max_hz",
    "hue": "hue_max_hz",
    "luminance": "luminance_max_hz",
    "hue_grating": "hue_grating_max_hz",
    "texture": "texture_max_hz",
    "structured": "structured_max_hz",
    "bar": "bar_max_hz",
    "natural": "natural_max_hz",
}
CURVATURE_MIN = 0.05  # curvature index above which curved fragments clearly win
MIN_DRIVE_HZ = 2.0  # below this, above the blank screen's rate, the battery does not drive the neuron


def true_family(neuron_type: str) -> str:
    """The family a virtual-cortex neuron type should be typed as ("unexplained" for cnn and custom types)."""
    return TRUE_FAMILY.get(neuron_type, "unexplained")


def fingerprint(nb: NeuronBattery, deg_per_px: float) -> dict:
    """One flat dict: every experiment's features, the blank screen's rate, each experiment's drive relative to
    the largest (`drive_NAME`, evoked spikes/s over the largest evoked), and sizes also in degrees."""
    fp: dict = {"blank_hz": nb.blank_hz}
    for res in nb.results.values():
        fp.update(res.features)
    peak = max([fp.get(k, 0.0) for k in DRIVES.values()] + [0.0])
    fp["max_evoked_hz"] = float(peak)
    for name, key in DRIVES.items():
        if key in fp:
            fp[f"drive_{name}"] = float(fp[key] / peak) if peak > 0 else 0.0
    for key in ("rf_diameter_px", "preferred_wavelength_px", "preferred_size_px", "preferred_dot_diameter_px"):
        if key in fp:
            fp[key.replace("_px", "_deg")] = float(fp[key] * deg_per_px)
    return fp


def type_neuron(fp: dict) -> tuple[str, str]:
    """(family, reason). The first rule that holds names the family; else "unexplained"."""
    d = lambda name: fp.get(f"drive_{name}", 0.0)  # noqa: E731
    if fp.get("max_evoked_hz", 0.0) < MIN_DRIVE_HZ:
        return "unexplained", f"the battery drives it less than {MIN_DRIVE_HZ:g} spikes/s above the blank screen"
    # Uniform coloured fields drive it, at least twice as much as gratings (no hue), and it prefers some hues.
    if d("hue") >= 0.3 and d("hue") >= 2 * max(d("grating"), 0.0) and fp.get("hue_selectivity", 0.0) >= 0.3:
        return "colour", "uniform fields of its hue drive it; luminance gratings do not"
    # Compact dots drive it; gratings and noise textures less, and a bar of the dot's width less than the dot.
    if (
        d("dot") >= 0.6
        and d("grating") < 0.4
        and fp.get("dot_index", 0.0) > 0.05
        and fp.get("texture_max_hz", 0.0) < fp.get("dot_max_hz", 0.0)
    ):
        return "dot", "a dot drives it, a bar of the same width, a grating and a noise texture far less"
    # Neither a hue alone nor a grating alone drives it, a grating on a surface of the right hue does.
    if d("hue_grating") >= 0.6 and d("hue") < 0.35 and d("grating") < 0.35:
        return "conjunction", "only a grating on a coloured surface drives it: orientation and hue together"
    # Band-limited noise textures drive it clearly more than the best grating, and coloured fields do not.
    if fp.get("texture_max_hz", 0.0) > 1.2 * fp.get("grating_max_hz", 0.0) and d("hue") < 0.3:
        return "texture", "noise textures drive it more than any grating"
    # Curved contour fragments beat straight ones, and contours drive it well.
    if fp.get("curvature_index", 0.0) >= CURVATURE_MIN and d("contour") >= 0.5:
        return "curvature", "curved contour fragments drive it more than straight ones"
    # Gratings drive it best, with a clear orientation preference, and coloured fields do not.
    if d("grating") >= 0.8 and fp.get("orientation_selectivity", 0.0) >= 0.35 and d("hue") < 0.25:
        return "oriented", "gratings drive it best, at one orientation"
    return "unexplained", "no family's signature is clear: several kinds of stimulus drive it alike"


def _deg(fp: dict, key: str) -> str:
    v = fp.get(key)
    return "?" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def in_words(fp: dict, family: str) -> str:
    """The fingerprint in one or two sentences a scientist reads, e.g. "orientation-tuned, preferred 40 deg,
    bandwidth 25 deg (half-width at half-height), ..."."""
    rf = f"receptive field {fp.get('rf_diameter_deg', 0):.1f} deg across"
    pos = fp.get("position_extent")
    inv = f", driven over {pos:.0%} of the image" if pos is not None else ""
    ori = (
        f"preferred {_deg(fp, 'preferred_orientation_deg')} deg, bandwidth {_deg(fp, 'orientation_bandwidth_deg')} deg"
        f" (OSI {fp.get('orientation_selectivity', 0):.2f}), wavelength {fp.get('preferred_wavelength_deg', 0):.2f} deg"
    )
    if family == "oriented":
        head = f"orientation-tuned, {ori}; end-stopping {fp.get('end_stopping', 0):.2f}"
    elif family == "curvature":
        head = (
            f"curvature-tuned: contours turning {_deg(fp, 'preferred_turning_deg')} deg, convex side towards "
            f"{_deg(fp, 'preferred_convex_direction_deg')} deg (curvature index {fp.get('curvature_index', 0):.2f})"
        )
    elif family == "dot":
        head = (
            f"dot detector: {fp.get('dot_polarity', '?')} dots {fp.get('preferred_dot_diameter_deg', 0):.2f} deg "
            f"across (dot index {fp.get('dot_index', 0):.2f} against a bar of the same width)"
        )
    elif family == "texture":
        head = (
            f"texture-tuned: noise textures drive it {fp.get('texture_max_hz', 0):.0f} spikes/s against "
            f"{fp.get('grating_max_hz', 0):.0f} for the best grating; phase scrambling keeps "
            f"{fp.get('scramble_invariance', 0):.0%} of its response"
        )
    elif family == "colour":
        head = (
            f"hue-tuned: preferred hue {_deg(fp, 'preferred_hue_deg')} deg "
            f"(selectivity {fp.get('hue_selectivity', 0):.2f}); luminance gratings do not drive it"
        )
    elif family == "conjunction":
        head = "colour and orientation together: a grating on a surface of its hue drives it, neither alone"
    else:
        head = "unexplained by the battery"
    return f"{head}; {rf}{inv}."
