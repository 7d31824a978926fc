"""A real PsychoPy window under Xvfb: pixels where the rig's degrees say, photodiode, onsets at flips.

Expected pixel positions are computed here from the calibration (cm per pixel,
viewing distance, tangent), independently of stimulus/presenters/geometry.py.
Under Xvfb there is no vsync: these tests prove what is drawn and how it is
stamped, not the rig's real timing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stimulus.fixation import AlwaysFixating
from stimulus.presenters.base import ShowPlan

pytestmark = pytest.mark.usefixtures("psychopy_display")

W, H = 400, 300
CM_PER_PX = 20.0 / 400  # small_display: 20 cm wide, 400 px
DIST_CM = 57.0


def deg_to_screen_px(deg: float) -> float:
    return DIST_CM * math.tan(math.radians(deg)) / CM_PER_PX


def expected_image_box(centre_deg, size_deg):
    """(top_row, bottom_row_exclusive, left_col, right_col_exclusive) in a grabbed frame (row 0 = top)."""
    x, y = centre_deg
    left = round(deg_to_screen_px(x - size_deg / 2))
    right = round(deg_to_screen_px(x + size_deg / 2))
    bottom = round(deg_to_screen_px(y - size_deg / 2))
    top = round(deg_to_screen_px(y + size_deg / 2))
    return H // 2 - top, H // 2 - bottom, W // 2 + left, W // 2 + right


@pytest.fixture
def window(small_display):
    from stimulus.presenters.psychopy_window import PsychoPyPresenter

    p = PsychoPyPresenter(small_display, grab_onset_frames=True)
    p.open()
    yield p
    p.close()


def _plan(pixels: np.ndarray, trial_id: int = 1) -> ShowPlan:
    return ShowPlan(trial_id, pixels, [f"p{trial_id}-{i}-{pixels.shape[-1]}" for i in range(len(pixels))], 2, 2, 1, 1)


def _block_centres(top, bottom, left, right, n_rows, n_cols):
    rows = (top + (np.arange(n_rows) + 0.5) * (bottom - top) / n_rows).astype(int)
    cols = (left + (np.arange(n_cols) + 0.5) * (right - left) / n_cols).astype(int)
    return rows, cols


@pytest.mark.parametrize("channels", [3, 1])
def test_image_pixels_are_where_the_degrees_say(window, small_display, channels):
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 256, (2, 10, 12, channels), dtype=np.uint8)  # not square, on purpose
    window.run_trial(_plan(pixels), lambda i, t, f: None, AlwaysFixating())
    assert [i for i, _ in window.grabbed] == [0, 1]
    top, bottom, left, right = expected_image_box(small_display.image_pos_deg, small_display.image_size_deg)
    # 0.5..5.5 deg at 57 cm with 0.05 cm pixels: 10..110 px right of centre (sanity check of the numbers above).
    assert (left - W // 2, right - W // 2) == (10, 110)
    for index, frame in window.grabbed:
        assert frame.shape == (H, W, 3)
        rows, cols = _block_centres(top, bottom, left, right, 10, 12)
        shown = frame[np.ix_(rows, cols)].astype(int)
        want = np.repeat(pixels[index], 3, axis=2) if channels == 1 else pixels[index]
        # Row 0 of the image is at the top of the screen, colours are the uint8 values.
        assert np.abs(shown - want.astype(int)).max() <= 1
        mid_row, mid_col = (top + bottom) // 2, (left + right) // 2
        background = np.array([128, 128, 128])
        # Edges to the pixel: just outside is background, just inside is image.
        assert np.abs(frame[mid_row, left - 1].astype(int) - background).max() <= 1
        assert np.abs(frame[mid_row, right].astype(int) - background).max() <= 1
        assert np.abs(frame[top - 1, mid_col].astype(int) - background).max() <= 1
        assert np.abs(frame[bottom, mid_col].astype(int) - background).max() <= 1
        assert np.abs(frame[mid_row, left].astype(int) - want[5, 0].astype(int)).max() <= 1
        assert np.abs(frame[mid_row, right - 1].astype(int) - want[5, 11].astype(int)).max() <= 1
        assert np.abs(frame[top, mid_col].astype(int) - want[0, 6].astype(int)).max() <= 1
        assert np.abs(frame[bottom - 1, mid_col].astype(int) - want[9, 6].astype(int)).max() <= 1


def test_photodiode_patch_in_its_corner_toggles_at_each_onset(window, small_display):
    pixels = np.full((3, 4, 4, 3), 200, np.uint8)
    start_white = window.photodiode_white
    window.run_trial(_plan(pixels), lambda i, t, f: None, AlwaysFixating())
    s = small_display.photodiode_size_px
    levels = []
    for _, frame in window.grabbed:
        patch = frame[H - s : H, W - s : W].astype(int)
        assert patch.min() == patch.max()  # uniform square, flush with the bottom-right corner
        levels.append(int(patch[0, 0, 0]))
        # One pixel beyond its inner edges is background again.
        assert np.abs(frame[H - s - 1, W - 1].astype(int) - 128).max() <= 1
        assert np.abs(frame[H - 1, W - s - 1].astype(int) - 128).max() <= 1
    white, black = 255, 0
    first = black if start_white else white
    assert levels == [first, white + black - first, first]


def test_fixation_point_at_the_fixation_position(window, small_display):
    window.run_trial(_plan(np.zeros((1, 4, 4, 3), np.uint8)), lambda i, t, f: None, AlwaysFixating())
    _, frame = window.grabbed[0]
    radius = DIST_CM * math.tan(math.radians(small_display.fixation_size_deg / 2)) / CM_PER_PX
    assert radius > 2
    assert tuple(frame[H // 2, W // 2]) == (255, 0, 0)  # red, on the line of sight
    far = int(math.ceil(radius)) + 2
    assert tuple(frame[H // 2, W // 2 + far]) == (128, 128, 128)


def test_onset_callbacks_are_stamped_at_their_flips(window):
    plan = _plan(np.zeros((4, 4, 4, 3), np.uint8))
    onsets = []
    outcome = window.run_trial(plan, lambda i, t, f: onsets.append((i, t, f, window.now())), AlwaysFixating())
    assert [o[0] for o in onsets] == [0, 1, 2, 3]
    errors = np.array(window.last_onset_to_flip_error_s)
    assert len(errors) == 4
    # Stamped inside win.flip(), just after the flip's own timestamp.
    # (microseconds normally; 20 ms allows for the scheduler on a loaded machine)
    assert np.all(errors >= 0) and np.all(errors < 0.02)
    # Onset spacing equals the flips between them: frame k of the trial is at
    # start + sum of the first k intervals.
    on_frames = [plan.fixation_frames + i * (plan.on_frames + plan.off_frames) for i in range(4)]
    flips = np.concatenate([[0.0], np.cumsum(outcome.frame_intervals_s.astype(np.float64))])
    stamped = np.array([o[1] for o in onsets]) - errors
    assert np.allclose(np.diff(stamped), np.diff(flips[on_frames]), atol=1e-4)


def test_textures_are_uploaded_before_the_first_frame(window, monkeypatch):
    from psychopy import visual

    created_after_first_flip = []
    flipped = [False]
    real_image_stim, real_flip = visual.ImageStim, window.win.flip

    def counting_image_stim(*args, **kwargs):
        created_after_first_flip.append(flipped[0])
        return real_image_stim(*args, **kwargs)

    def noting_flip(*args, **kwargs):
        flipped[0] = True
        return real_flip(*args, **kwargs)

    monkeypatch.setattr(visual, "ImageStim", counting_image_stim)
    monkeypatch.setattr(window.win, "flip", noting_flip)
    plan = _plan(np.random.default_rng(0).integers(0, 256, (3, 6, 6, 3), dtype=np.uint8), trial_id=5)
    window.run_trial(plan, lambda i, t, f: None, AlwaysFixating())
    assert created_after_first_flip == [False, False, False]
    # The same images again come from the texture cache.
    window.run_trial(plan, lambda i, t, f: None, AlwaysFixating())
    assert len(created_after_first_flip) == 3


def test_vsync_pacing_refuses_a_display_at_the_wrong_rate(small_display):
    from stimulus.presenters.psychopy_window import PsychoPyPresenter

    # Xvfb flips at thousands of Hz: a rig file that insists on vsync at 120 Hz must not open.
    p = PsychoPyPresenter(small_display.model_copy(update={"frame_pacing": "vsync"}))
    with pytest.raises(RuntimeError, match="display.refresh_hz"):
        p.open()
    assert p.win is None
    auto = PsychoPyPresenter(small_display.model_copy(update={"frame_pacing": "auto"}))
    with auto:
        assert auto.pacing == "software" and auto.measured_refresh_hz > 180
