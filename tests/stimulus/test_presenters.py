"""The presenter contract, run against every presenter; plus schedule, geometry, fixation and factory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.clocks import VirtualClock, WallClock
from stimulus.config import DisplayConfig, FixationConfig
from stimulus.fixation import (
    AlwaysFixating,
    EyeTrackerFixation,
    GazeSample,
    SimulatedFixation,
    SimulatedGazeTracker,
    make_fixation,
)
from stimulus.presenters import HeadlessPresenter, choose_presenter_kind, make_presenter
from stimulus.presenters.base import ShowPlan
from stimulus.presenters.frames import count_dropped_frames, trial_schedule
from stimulus.presenters.geometry import photodiode_rect_px, rect_deg_to_px

FIX, ON, OFF, ITI, N_IMAGES = 3, 2, 2, 2, 4


def make_plan(trial_id: int = 7, n: int = N_IMAGES, channels: int = 3, seed: int = 0) -> ShowPlan:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 8, 8, channels), dtype=np.uint8)
    return ShowPlan(trial_id, pixels, [f"t{trial_id}-img{i}" for i in range(n)], FIX, ON, OFF, ITI)


class BreakAtPoll:
    """Holds fixation until its k-th poll (1-based) in a trial: frame-exact, the same for every presenter."""

    def __init__(self, k: int):
        self.k = k
        self.polls = 0

    def start_trial(self, trial_id, start_s, duration_s):
        self.polls = 0

    def holding(self, now_s):
        self.polls += 1
        return self.polls < self.k


@pytest.fixture(params=["headless-virtual", "headless-realtime", "psychopy"])
def presenter(request, small_display):
    if request.param == "headless-virtual":
        p = HeadlessPresenter(small_display.refresh_hz, VirtualClock())
    elif request.param == "headless-realtime":
        p = HeadlessPresenter(small_display.refresh_hz, WallClock())
    else:
        request.getfixturevalue("psychopy_display")
        from stimulus.presenters.psychopy_window import PsychoPyPresenter

        p = PsychoPyPresenter(small_display)
    p.open()
    yield p
    p.close()


def _run(presenter, plan, fixation):
    onsets = []
    outcome = presenter.run_trial(plan, lambda i, t, f: onsets.append((i, t, f)), fixation)
    return outcome, onsets


def test_onsets_once_per_image_in_order_at_frame_boundaries(presenter):
    plan = make_plan()
    outcome, onsets = _run(presenter, plan, AlwaysFixating())
    frame_s = 1.0 / presenter.refresh_hz
    assert [i for i, _, _ in onsets] == list(range(N_IMAGES))
    frames = [f for _, _, f in onsets]
    assert np.all(np.diff(frames) == ON + OFF)
    times = np.array([t for _, t, _ in onsets])
    # Each onset time is its flip's time: onsets are as far apart as the flips between them
    # (frame k of the trial is k intervals after the first)...
    flips = np.concatenate([[0.0], np.cumsum(outcome.frame_intervals_s.astype(np.float64))])
    onset_frames = [FIX + i * (ON + OFF) for i in range(N_IMAGES)]
    assert np.allclose(np.diff(times), np.diff(flips[onset_frames]), atol=1e-3)
    # ...and never closer than the refreshes they stand for (a late flip can only delay them).
    assert np.all(np.diff(times) >= (ON + OFF - 1) * frame_s)
    assert outcome.start_s <= times[0] <= times[-1] <= outcome.end_s


def test_outcome_fields(presenter):
    plan = make_plan(trial_id=11)
    outcome, _ = _run(presenter, plan, AlwaysFixating())
    n_frames = FIX + N_IMAGES * (ON + OFF) + ITI
    frame_s = 1.0 / presenter.refresh_hz
    assert outcome.trial_id == 11
    assert outcome.status == "done" and outcome.reason == ""
    assert outcome.n_onsets == N_IMAGES
    assert len(outcome.frame_intervals_s) == n_frames - 1
    assert isinstance(outcome.dropped_frames, int) and outcome.dropped_frames >= 0
    intervals = outcome.frame_intervals_s.astype(np.float64)
    # The flips span the trial: never faster than the refresh, and the trial lasts as long as its flips.
    span = float(np.sum(intervals))
    assert span >= (n_frames - 2) * frame_s
    # (start_s is taken before the first flip, which waits for a refresh; 250 ms of slack for a busy machine, where
    # the first flip waited 72 ms more than a frame beside two busy processes. A start taken after the first flip
    # would make this negative.)
    assert 0.0 <= (outcome.end_s - outcome.start_s) - span <= frame_s + 0.25


def test_abort_on_fixation_break_stops_onsets(presenter):
    plan = make_plan()
    # Poll k is on frame k-1; frame FIX + ON + OFF is the onset of image 1.
    outcome, onsets = _run(presenter, plan, BreakAtPoll(FIX + ON + OFF + 1))
    assert outcome.status == "aborted"
    assert outcome.reason == "fixation break"
    assert [i for i, _, _ in onsets] == [0, 1]
    assert outcome.n_onsets == 2
    # The next trial runs normally after an abort.
    outcome2, onsets2 = _run(presenter, make_plan(trial_id=8), AlwaysFixating())
    assert outcome2.status == "done" and len(onsets2) == N_IMAGES


def test_break_during_iti_does_not_abort(presenter):
    plan = make_plan()
    frames_needing_fixation = FIX + N_IMAGES * (ON + OFF)
    outcome, onsets = _run(presenter, plan, BreakAtPoll(frames_needing_fixation + 1))
    assert outcome.status == "done" and len(onsets) == N_IMAGES


def test_photodiode_toggles_at_every_onset(presenter):
    states = []
    before = presenter.photodiode_white
    presenter.run_trial(make_plan(n=3), lambda i, t, f: states.append(presenter.photodiode_white), AlwaysFixating())
    assert states == [not before, before, not before]
    # State carries over between trials (no extra transition), and idle does not touch it.
    presenter.idle(0.02)
    assert presenter.photodiode_white == (not before)


def test_idle_takes_about_its_duration_and_returns(presenter):
    t0 = presenter.now()
    presenter.idle(0.1)
    elapsed = presenter.now() - t0
    frame_s = 1.0 / presenter.refresh_hz
    # Never blocks for long: the upper bound only allows for a busy machine.
    assert 0.1 - frame_s <= elapsed <= 0.1 + 1.0
    presenter.idle(0.0)  # nothing to show: returns at once
    outcome, _ = _run(presenter, make_plan(), AlwaysFixating())
    assert outcome.status == "done"


def test_headless_screen_follows_the_schedule():
    p = HeadlessPresenter(60.0, VirtualClock())
    p.open()
    plan = make_plan()
    seen = []
    p.run_trial(plan, lambda i, t, f: seen.append((p.screen.copy(), p.fixation_point_on)), AlwaysFixating())
    for i, (screen, fix_on) in enumerate(seen):
        assert np.array_equal(screen, plan.pixels[i]) and fix_on
    assert p.screen is None and not p.fixation_point_on  # ITI: background only
    p.idle(0.05)
    assert p.fixation_point_on


class LateClock(VirtualClock):
    """A virtual clock on which the flip after `late_after` frames comes `late_s` late (a busy machine)."""

    def __init__(self, late_after: int, late_s: float):
        super().__init__()
        self.flips, self.late_after, self.late_s = 0, late_after, late_s

    def sleep_until(self, t):
        self.flips += 1
        super().sleep_until(t + (self.late_s if self.flips == self.late_after + 1 else 0.0))


@pytest.mark.parametrize("late_frames, dropped", [(0.3, 0), (0.7, 1), (2.2, 2), (3.6, 4)])
def test_a_late_flip_drops_the_refreshes_it_missed_and_later_frames_keep_the_grid(late_frames, dropped):
    hz = 50.0
    p = HeadlessPresenter(hz, LateClock(late_after=FIX + 1, late_s=late_frames / hz))
    p.open()
    outcome, onsets = _run(p, make_plan(), AlwaysFixating())
    assert outcome.dropped_frames == dropped
    # The frames after the late one stay on the refresh grid: the second onset comes (ON + OFF + dropped)
    # refreshes after the first, not shifted by a fraction of a frame.
    assert onsets[1][1] - onsets[0][1] == pytest.approx((ON + OFF + dropped) / hz, abs=1e-9)


def test_headless_virtual_clock_is_exact():
    p = HeadlessPresenter(50.0, VirtualClock())
    p.open()
    outcome, onsets = _run(p, make_plan(), AlwaysFixating())
    assert outcome.dropped_frames == 0
    assert np.allclose(outcome.frame_intervals_s, 0.02)
    assert onsets[0][1] == pytest.approx((FIX + 1) * 0.02)


# ---------------------------------------------------------------- schedule
def test_schedule_layout():
    slots = trial_schedule(make_plan(n=2))
    assert len(slots) == FIX + 2 * (ON + OFF) + ITI
    assert [k for k, s in enumerate(slots) if s.onset] == [FIX, FIX + ON + OFF]
    assert [s.image for s in slots[FIX : FIX + ON + OFF]] == [0] * ON + [-1] * OFF
    assert all(s.needs_fixation for s in slots[: FIX + 2 * (ON + OFF)])
    assert not any(s.needs_fixation or s.fixation_point for s in slots[-ITI:])


def test_schedule_refuses_bad_plans():
    plan = make_plan()
    plan.on_frames = 0
    with pytest.raises(ValueError, match="on_frames"):
        trial_schedule(plan)
    plan = make_plan()
    plan.image_hashes = plan.image_hashes[:2]
    with pytest.raises(ValueError, match="hashes"):
        trial_schedule(plan)


def test_dropped_frames_count_whole_missed_refreshes():
    f = 1 / 60
    flips = np.cumsum([0, f, f, 2.1 * f, f, 3 * f, 1.3 * f])
    assert count_dropped_frames(flips, f) == 1 + 2
    assert count_dropped_frames([0.0], f) == 0


# ---------------------------------------------------------------- geometry
def test_geometry_uses_the_tangent_from_the_calibration():
    d = DisplayConfig(resolution_px=(1000, 800), screen_width_cm=50.0, viewing_distance_cm=50.0)
    # 0.05 cm a pixel; 45 deg at 50 cm is 50 cm = 1000 px from the centre.
    r = rect_deg_to_px((0.0, 0.0), 90.0, d)
    assert (r.left, r.right, r.bottom, r.top) == (-1000, 1000, -1000, 1000)
    # Small-angle approximation would say 4 deg -> 69.8 px; the tangent gives 69.84 px each side... both round to 70.
    r = rect_deg_to_px((10.0, 0.0), 4.0, d)
    assert r.left == round(50 * math.tan(math.radians(8)) / 0.05)
    assert r.right == round(50 * math.tan(math.radians(12)) / 0.05)
    pd = photodiode_rect_px(d.model_copy(update={"photodiode_corner": "top_left", "photodiode_size_px": 40}))
    assert (pd.left, pd.right, pd.bottom, pd.top) == (-500, -460, 360, 400)


# ---------------------------------------------------------------- fixation
class ScriptedTracker:
    def __init__(self):
        self.sample: GazeSample | None = None

    def latest(self):
        return self.sample

    def close(self):
        pass


def test_eye_tracker_fixation_window_blinks_and_stale_samples():
    tracker = ScriptedTracker()
    fix = EyeTrackerFixation(tracker, (1.0, 0.0), radius_deg=1.0, blink_grace_s=0.1, max_sample_age_s=0.05)
    fix.start_trial(1, 0.0, 1.0)
    tracker.sample = GazeSample(0.0, 1.5, 0.5, True)
    assert fix.holding(0.01)  # 0.71 deg from the fixation point: inside
    tracker.sample = GazeSample(0.02, 0.0, 0.0, False)  # blink
    assert fix.holding(0.03) and fix.holding(0.12)
    tracker.sample = GazeSample(0.13, 1.0, 0.0, True)  # back before the grace ran out
    assert fix.holding(0.13)
    assert fix.holding(0.20)  # sample 70 ms old: stale since 0.18, within the grace
    assert not fix.holding(0.30)  # stale since 0.18: 120 ms lost
    assert fix.break_reason == "gaze lost"
    fix.start_trial(2, 1.0, 1.0)
    tracker.sample = GazeSample(1.0, 1.0, 0.0, True)
    assert fix.holding(1.01)
    tracker.sample = GazeSample(1.02, 2.2, 0.0, True)  # 1.2 deg away: out of the window
    assert not fix.holding(1.02)
    tracker.sample = GazeSample(1.03, 1.0, 0.0, True)
    assert not fix.holding(1.03)  # a break is final for the trial
    assert fix.break_reason == "gaze left the fixation window"


def test_simulated_gaze_breaks_trials_through_the_presenter():
    p = HeadlessPresenter(100.0, VirtualClock())
    p.open()
    steady = EyeTrackerFixation(SimulatedGazeTracker(p.now, jitter_deg=0.2, seed=1), (0.0, 0.0), 1.5)
    assert all(_run(p, make_plan(trial_id=t), steady)[0].status == "done" for t in range(5))
    tracker = SimulatedGazeTracker(p.now, jitter_deg=0.2, saccade_rate_hz=20.0, seed=1)
    wandering = EyeTrackerFixation(tracker, (0.0, 0.0), 1.5)
    statuses = []
    for t in range(5):
        tracker.return_to_centre()
        statuses.append(_run(p, make_plan(trial_id=t), wandering)[0].status)
    assert statuses.count("aborted") >= 3


def test_make_fixation_from_config():
    d = DisplayConfig()
    assert isinstance(make_fixation(FixationConfig(source="none"), d), AlwaysFixating)
    assert isinstance(make_fixation(FixationConfig(break_probability=0.5), d), SimulatedFixation)
    cfg = FixationConfig(source="eyetracker", tracker_class="tests.stimulus.test_presenters:ScriptedTracker")
    fix = make_fixation(cfg, d)
    # (the class is loaded by name, so compare names: pytest imports this file under another module name)
    assert isinstance(fix, EyeTrackerFixation) and type(fix.tracker).__name__ == "ScriptedTracker"
    with pytest.raises(ValueError, match="tracker_class"):
        FixationConfig(source="eyetracker")
    with pytest.raises(ValueError, match="cannot be loaded"):
        make_fixation(FixationConfig(source="eyetracker", tracker_class="no_such_module:Tracker"), d)


def test_simulated_fixation_break_rate():
    fix = SimulatedFixation(0.3, seed=3)
    broken = 0
    for t in range(400):
        fix.start_trial(t, 0.0, 1.0)
        broken += not fix.holding(0.999999)
    assert 0.22 < broken / 400 < 0.38


# ---------------------------------------------------------------- factory
def test_factory_choices(monkeypatch):
    d = DisplayConfig(presenter="headless")
    assert isinstance(make_presenter(d, WallClock()), HeadlessPresenter)
    assert make_presenter(d, VirtualClock()).pacing == "virtual clock"
    with pytest.raises(ValueError, match="realtime"):
        make_presenter(DisplayConfig(presenter="psychopy"), VirtualClock())
    auto = DisplayConfig(presenter="auto")
    assert choose_presenter_kind(auto, VirtualClock()) == ("headless", "virtual clock (speed max)")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert choose_presenter_kind(auto, WallClock()) == ("headless", "no $DISPLAY")


def test_factory_auto_opens_psychopy_where_a_window_can_open(psychopy_display):
    from stimulus.presenters.psychopy_window import PsychoPyPresenter

    kind, why = choose_presenter_kind(DisplayConfig(presenter="auto"), WallClock())
    assert (kind, why) == ("psychopy", "a test window opened")
    assert isinstance(make_presenter(DisplayConfig(presenter="auto"), WallClock()), PsychoPyPresenter)
