"""Which frame shows what in a trial, and how many refreshes were dropped.

Both presenters walk the same schedule, so a simulated rig and a real one show
exactly the same frames in the same order; only what draws them differs.

A trial, in whole frames:

    fixation_frames   fixation point, no image          (fixation required)
    per image:
      on_frames       image (+ fixation point); the first of these is the onset
      off_frames      fixation point, no image          (fixation required)
    iti_frames        background only                   (fixation not required)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stimulus.presenters.base import ShowPlan, TrialOutcome


@dataclass(frozen=True)
class FrameSlot:
    """What one frame of a trial shows."""

    image: int  # index into plan.pixels shown on this frame, -1 for none
    onset: bool  # first frame of an image: the onset is stamped at this flip
    fixation_point: bool  # draw the fixation point on this frame
    needs_fixation: bool  # a fixation break on this frame aborts the trial


# Between trials, and the frame after a fixation break: fixation point, no image.
IDLE_SLOT = FrameSlot(-1, False, True, False)


def trial_schedule(plan: ShowPlan) -> list[FrameSlot]:
    """Every frame of the trial, in order (the module docstring's layout); ValueError for an inconsistent plan."""
    if plan.on_frames < 1:
        raise ValueError(f"trial {plan.trial_id}: on_frames must be >= 1 (got {plan.on_frames})")
    n_images = len(plan.image_hashes)
    if plan.pixels.shape[0] != n_images:
        raise ValueError(f"trial {plan.trial_id}: {plan.pixels.shape[0]} images but {n_images} hashes")
    slots = [FrameSlot(-1, False, True, True)] * plan.fixation_frames
    for i in range(n_images):
        slots.append(FrameSlot(i, True, True, True))
        slots += [FrameSlot(i, False, True, True)] * (plan.on_frames - 1)
        slots += [FrameSlot(-1, False, True, True)] * plan.off_frames
    slots += [FrameSlot(-1, False, False, False)] * plan.iti_frames
    return slots


def count_dropped_frames(flip_times_s: list[float] | np.ndarray, frame_s: float) -> int:
    """Refreshes missed between consecutive flips.

    An interval of about k frames means k-1 refreshes went by with the previous
    frame still on screen. Intervals are rounded to whole frames, so jitter below
    half a frame is not counted as a drop.
    """
    if len(flip_times_s) < 2:
        return 0
    gaps = np.diff(np.asarray(flip_times_s, dtype=np.float64)) / frame_s
    return int(np.sum(np.maximum(np.rint(gaps) - 1, 0)))


def frames_for(duration_s: float, refresh_hz: float) -> int:
    """Whole frames closest to a duration (a duration is never shown as a fraction of a frame)."""
    return max(0, int(round(duration_s * refresh_hz)))


def trial_outcome(
    trial_id: int, status: str, start_s: float, flips: list[float], n_onsets: int, frame_s: float, reason: str = ""
) -> TrialOutcome:
    """The outcome both presenters report: its end is the last flip, its timing comes from all the flips."""
    return TrialOutcome(
        trial_id,
        status,
        start_s,
        flips[-1] if flips else start_s,
        n_onsets,
        count_dropped_frames(flips, frame_s),
        np.diff(flips).astype(np.float32),
        reason,
    )
