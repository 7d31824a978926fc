"""Degrees of visual angle to screen pixels, from the rig's monitor calibration.

The screen is flat, so a fixed angle covers more centimetres away from the
line of sight. Positions and edges are therefore converted with the tangent,
from the eye's straight-ahead point (the screen centre):

    x_cm = viewing_distance_cm * tan(x_deg)

An image of size s centred at eccentricity e spans [tan(e - s/2), tan(e + s/2)]
(times the distance) on each axis: each edge is where the eye sees it, so the
image subtends s degrees wherever it is placed. (PsychoPy's "deg" units use
the small-angle approximation instead, which is 0.1% off at 4 deg but 2.3% at
30 deg; its "degFlat" units agree with this.)

Pixel coordinates here are PsychoPy's "pix" units: origin at the screen centre,
x to the right, y up. Edges are rounded to whole pixels so that image pixels
map onto screen pixels without half-pixel seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stimulus.config import DisplayConfig


@dataclass(frozen=True)
class RectPx:
    """A rectangle in PsychoPy "pix" units (whole pixels, origin at the centre, y up)."""

    left: int
    right: int
    bottom: int
    top: int

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.bottom + self.top) / 2.0)

    @property
    def size(self) -> tuple[int, int]:
        return (self.right - self.left, self.top - self.bottom)


def cm_per_px(display: DisplayConfig) -> float:
    return display.screen_width_cm / display.resolution_px[0]


def deg_to_px_flat(deg: float, display: DisplayConfig) -> float:
    """Screen position (pixels from centre) of a point `deg` degrees from the line of sight."""
    return display.viewing_distance_cm * math.tan(math.radians(deg)) / cm_per_px(display)


def size_deg_to_px(size_deg: float, display: DisplayConfig) -> float:
    """Width in pixels of something centred on the line of sight that subtends size_deg."""
    return 2.0 * deg_to_px_flat(size_deg / 2.0, display)


def rect_deg_to_px(centre_deg: tuple[float, float], size_deg: float, display: DisplayConfig) -> RectPx:
    """Pixel rectangle of a square of `size_deg` degrees centred at `centre_deg` (x, y; y up)."""
    x, y = centre_deg
    half = size_deg / 2.0
    left = round(deg_to_px_flat(x - half, display))
    right = round(deg_to_px_flat(x + half, display))
    bottom = round(deg_to_px_flat(y - half, display))
    top = round(deg_to_px_flat(y + half, display))
    if right <= left or top <= bottom:
        raise ValueError(f"an image of {size_deg} deg is under one pixel on this display")
    return RectPx(left, right, bottom, top)


def photodiode_rect_px(display: DisplayConfig) -> RectPx:
    """The photodiode patch: a square flush with the chosen corner of the window."""
    w, h = display.resolution_px
    s = display.photodiode_size_px
    vertical, horizontal = display.photodiode_corner.split("_")
    left = w // 2 - s if horizontal == "right" else -(w // 2)
    bottom = -(h // 2) if vertical == "bottom" else h // 2 - s
    return RectPx(left, left + s, bottom, bottom + s)
