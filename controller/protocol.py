"""The trial protocol: a generator that yields commands and receives their results, and the loop's rules.

It says what happens, in which order and by which rules, and nothing about
sockets or clocks, so it runs against the session engine with any world's parts
plugged in, or against a test that plays the engine by hand:

    offer = yield TakeImages(trial_id, n)       # the model's images, or the pool's if it was late
    items = compose_plan(requeue, offer, n)     # requeued images first
    yield Present(trial_id, items, offer)
    report = yield AwaitTrial(trial_id)

Pipelining: `queue_depth` plans are at the presenter while one trial runs; the
plan for trial j is requested as soon as trial j - queue_depth has finished, so
the model works while the rig shows trials.

Aborted trials (fixation broke) are recorded, and their images go first into the
next plan taken; so do the images of a done trial whose responses are invalid for
a fault (the stream silent over the window, the image not shown as planned).
`n_trials` counts completed trials; a done trial's images still waiting to be
shown again once that many are under way get one trial more. At most `max_attempts` trials are
started, so a subject that keeps breaking fixation ends the session.

The rules the engine applies while it dispatches are the small named functions
below (plan deadline, pool fallback, requeue, response validity, what the
recording covered, what the screen showed, onset times), each testable without
any part.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

# An image in a plan: (content hash, pixels (H, W, C) uint8, why it was chosen).
Item = tuple


@dataclass
class RequestPlan:
    """Ask the model for a plan for trial_id; returns nothing."""

    trial_id: int


@dataclass
class Offer:
    """Images for a trial: the model's (source "model") or, when its plan was late, the pool's ("pool")."""

    items: list
    source: str
    model_version: int


@dataclass
class TakeImages:
    """Returns an Offer of n images for trial_id: the model's if ready in time, else pool images."""

    trial_id: int
    n: int


@dataclass
class Present:
    """Send a trial's plan (items, where they came from) to the presenter; returns nothing."""

    trial_id: int
    items: list
    source: str
    model_version: int


@dataclass
class AwaitTrial:
    """Returns the presenter's report for trial_id ("done" or "aborted")."""

    trial_id: int


@dataclass
class CollectResponses:
    """Returns the trial's response rows once the acquisition clock has passed its last window."""

    trial_id: int


@dataclass
class UpdateModel:
    """Send a completed trial's response rows to the model; returns nothing."""

    rows: list


@dataclass
class Finish:
    """The protocol's return value: trials completed and aborted."""

    completed: int
    aborted: int


# -- rules ---------------------------------------------------------------------------------


def compose_plan(requeue: list, offer: Offer, n: int) -> tuple[list, int]:
    """A trial's n images: requeued ones first, then the offer's. Returns (items, how many requeued used)."""
    used = requeue[:n]
    return list(used) + list(offer.items[: n - len(used)]), len(used)


def requeued(trial_id: int, items: list) -> list:
    """An aborted trial's images, to be shown again, each saying so."""
    return [(h, px, f"requeued from trial {trial_id}: {why}") for h, px, why in items]


def pool_offer(
    pool_images: np.ndarray, hash_of, rng: np.random.Generator, n: int, allowed: np.ndarray | None = None
) -> Offer:
    """The fallback when the model's plan is late: n distinct pool images at random, each keyed by
    hash_of(pixels) (only the chosen ones are hashed). `allowed`: the pool indices to draw from (the rig's
    selection.random_from, so a late plan shows what a random slot would, e.g. no gaudy images); all if None."""
    allowed = np.arange(len(pool_images)) if allowed is None else np.asarray(allowed)
    idx = allowed[rng.choice(len(allowed), min(n, len(allowed)), replace=False)]
    return Offer(
        [(hash_of(pool_images[i]), pool_images[i], f"pool fallback (model late) pool#{i}") for i in idx], "pool", -1
    )


def plan_deadline(request_sent_s: float, stall_timeout_s: float, presenter_needs_it_at: float | None) -> float:
    """When a plan is late: when the presenter needs it (known only where trials take wall time), and in
    any case after `stall_timeout_s`, so a dead model worker never stalls the session."""
    stall = request_sent_s + stall_timeout_s
    return stall if presenter_needs_it_at is None else min(stall, presenter_needs_it_at)


def response_windows(onsets_s: np.ndarray, window_start_s: float, window_end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Each onset's response window [onset + start, onset + end) on the acquisition clock."""
    onsets_s = np.asarray(onsets_s, np.float64)
    return onsets_s + window_start_s, onsets_s + window_end_s


def windows_valid(starts: np.ndarray, ends: np.ndarray, lost_intervals: list, onset_known: np.ndarray) -> np.ndarray:
    """A response is valid (trained on) when its onset time is known and no lost spikes overlap its window."""
    valid = np.asarray(onset_known, bool).copy()
    for a, b in lost_intervals:
        valid &= ~((starts < b) & (a < ends))
    return valid


def overlapping(starts: np.ndarray, ends: np.ndarray, intervals: list) -> np.ndarray:
    """Which windows [start, end) overlap any of the intervals (a, b)."""
    hit = np.zeros(len(starts), bool)
    for a, b in intervals:
        hit |= (np.asarray(starts) < b) & (a < np.asarray(ends))
    return hit


# -- what the recording covered ----------------------------------------------------------------
#
# A window counts only if the stream was live through it. What proves a stream live depends on what the source
# can see (STREAM_PROOF by its kind, or its describe()'s "proof"):
#   "clock"  (the default: the virtual cortex, a replay): the source makes the stream; its batches' spans and
#            its heartbeats' clock are its own, so they prove it was live up to them (a lost batch is a gap in
#            the sequence numbers: lost_intervals).
#   "spikes" (LSL: a recording system that says nothing while it stalls): only a spike's own stamp proves the
#            stream was live at that time; the codes come on a stream of their own and prove nothing of it. The
#            heartbeats' clock there is an estimate (how far the stream has surely got, so no spike in flight is
#            cut off), never proof.
#   "events" (Open Ephys): as "spikes", and an event code's stamp is proof too (its TTL lines are samples of the
#            same stream, sent by the same GUI).
# For "spikes" and "events": the stretches longer than `max_silence_s` with no spike are silences; a window is complete only
# once a spike stamped at or after its end has come (or the estimated clock has run `max_silence_s` past the
# last spike: an open silence), and it is valid only if no silence overlaps it.


# What proves each kind of stream live, by the "kind" its source's describe() gives; a source may also say it
# itself, under "proof". A kind not listed is taken to make its own clock.
STREAM_PROOF = {"lsl": "spikes", "open ephys": "events"}


def stream_proof(info: dict) -> str:
    """What proves a source's stream live, "spikes", "events" or "clock" (the comment above), from its description."""
    proof = info.get("proof") or STREAM_PROOF.get(info.get("kind"), "clock")
    if proof not in ("spikes", "events", "clock"):
        raise ValueError(f"acquisition source: proof {proof!r}, must be 'spikes', 'events' or 'clock'")
    return proof


def stream_silences(live_s: float, stamps: np.ndarray, max_silence_s: float) -> tuple[list, float]:
    """The silences that new spike stamps reveal after the last proof at `live_s`: [(from, to)] stretches longer
    than max_silence_s with no spike, and the new last proof. Stamps at or before live_s (late) change nothing;
    live_s = -inf before the first spike (the stream's start is no silence)."""
    t = np.asarray(stamps, np.float64)
    t = np.sort(t[t > live_s]) if np.isfinite(live_s) else np.sort(t)
    if not len(t):
        return [], live_s
    edges = np.concatenate([[live_s], t]) if np.isfinite(live_s) else t
    gaps = np.flatnonzero(np.diff(edges) > max_silence_s)
    return [(float(edges[k]), float(edges[k + 1])) for k in gaps], float(t[-1])


def open_silence(live_s: float, clock_s: float, max_silence_s: float) -> tuple[float, float] | None:
    """The silence still going on: from the last spike to the stream's estimated clock, once that is longer
    than max_silence_s (None before the first spike, or while shorter)."""
    if np.isfinite(live_s) and clock_s - live_s > max_silence_s:
        return (live_s, clock_s)
    return None


def window_covered(end_s: float, clock_s: float, live_s: float, max_silence_s: float | None) -> bool:
    """Whether a window ending at end_s can be collected: the stream's clock has passed it and, where only
    spikes prove the stream live (max_silence_s given), a spike stamped at or after end_s has come or a silence
    longer than max_silence_s is going on (then the window is collected invalid, not waited for)."""
    if clock_s < end_s:
        return False
    if max_silence_s is None:
        return True
    return live_s >= end_s or open_silence(live_s, clock_s, max_silence_s) is not None


# -- what the screen showed ---------------------------------------------------------------------


def presentation_faults(
    frame_intervals_s: np.ndarray,
    n_onsets: int,
    fixation_frames: int,
    on_frames: int,
    off_frames: int,
    refresh_hz: float,
    tolerance_frames: int,
) -> list:
    """Per image of a trial: None if it was shown as planned, else why not. The schedule is whole frames
    (stimulus/presenters/frames.py): image i's onset is frame fixation_frames + i * (on + off), and
    frame_intervals_s[k] is the time from frame k's flip to frame k+1's. An image whose on period (onset to the
    flip that takes it off) or blank after it lasted more than tolerance_frames frames longer or shorter than
    planned was not shown as planned (a dropped frame lengthens the frame before it)."""
    iv = np.asarray(frame_intervals_s, np.float64)
    out: list = []
    for i in range(n_onsets):
        onset = fixation_frames + i * (on_frames + off_frames)
        problems = []
        for what, a, n in (("shown", onset, on_frames), ("blank after it", onset + on_frames, off_frames)):
            if n == 0 or a + n > len(iv):
                continue  # no such period, or the trial's last flip came before its end (nothing to measure)
            frames = int(np.rint(iv[a : a + n].sum() * refresh_hz))
            if abs(frames - n) > tolerance_frames:
                problems.append(f"{what} {frames} frames, planned {n}")
        out.append(None if not problems else "presentation: " + ", ".join(problems))
    return out


def requeued_unmeasured(trial_id: int, items: list, rows: list) -> list:
    """The images of a done trial whose responses are invalid for a fault (row["fault"]: the stream silent
    over the window, the image not shown as planned), to be shown again, each saying why."""
    return [
        (h, px, f"requeued from trial {trial_id} ({row['fault']}): {why}")
        for (h, px, why), row in zip(items, rows)
        if row.get("fault")
    ]


def onset_times(recorded: list, flips: list, fit) -> tuple[np.ndarray, np.ndarray]:
    """Each onset on the acquisition clock: the event code the acquisition system recorded, else the flip
    time mapped through the clock fit, else unknown (NaN). Returns (times, known)."""
    times = np.full(len(recorded), np.nan)
    for i, (t_rec, flip) in enumerate(zip(recorded, flips)):
        if t_rec is not None:
            times[i] = t_rec
        elif fit is not None:
            times[i] = float(fit.to_acquisition(flip))
    return times, ~np.isnan(times)


def onset_spacing_s(timing) -> float:
    """The shortest time between two image onsets (one image's on and off frames)."""
    return (timing.on_frames + timing.off_frames) / timing.refresh_hz


def photodiode_max_lag_s(timing) -> float:
    """How long after its code a photodiode edge still belongs to that onset: half the onset spacing, at most
    100 ms (no display lags more)."""
    return min(0.1, 0.5 * onset_spacing_s(timing))


def label_tolerance_s(timing) -> float:
    """How far a recorded onset code may sit from where its flip says (OnsetLabeller): under half the onset
    spacing, so a lost code is noticed, never shifted onto the next onset."""
    return 0.4 * onset_spacing_s(timing)


def photodiode_onsets(code_times: np.ndarray, edges: np.ndarray, max_lag_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The onsets as the screen showed them: for each onset code, the first photodiode edge within max_lag_s
    after it (edges sorted). Returns (times, found); an onset without an edge keeps its code time."""
    code_times = np.asarray(code_times, np.float64)
    times, found = code_times.copy(), np.zeros(len(code_times), bool)
    if len(edges):
        k = np.searchsorted(edges, code_times, "left")
        ok = k < len(edges)
        cand = np.where(ok, edges[np.minimum(k, len(edges) - 1)], np.inf)
        found = ok & (cand - code_times <= max_lag_s) & ~np.isnan(code_times)
        times[found] = cand[found]
    return times, found


class OnsetLabeller:
    """Pairs onset codes recorded without labels (plain code words read from TTL lines carry no trial number)
    with the presenter's onsets, in order.

    Each next code must follow the last paired one by the interval between their flips, within `tolerance_s`
    (less than half the shortest spacing of two onsets): a code that comes too early is an extra one and is
    skipped; one that comes too late means the flip's own code was lost, and that flip stays unlabelled (its
    onset is then mapped by the clock fit). So a lost code never shifts the labels of the codes after it.
    The first code is paired with the first onset."""

    def __init__(self, tolerance_s: float):
        self.tolerance_s = tolerance_s
        self.flips: list[tuple] = []  # (key, flip_s) in flip order
        self.codes: list[float] = []
        self.i = self.j = 0
        self.anchor: tuple[float, float] | None = None  # (flip_s, code_s) of the last pair
        self.unmatched: set = set()  # flips whose code was lost
        self.extra_codes = 0

    def add_flip(self, key, flip_s: float) -> None:
        self.flips.append((key, flip_s))

    def add_code(self, t_s: float) -> None:
        self.codes.append(t_s)

    def pair(self) -> dict:
        """New labels {key: code time} from what has come in so far."""
        out = {}
        while self.i < len(self.flips) and self.j < len(self.codes):
            key, flip = self.flips[self.i]
            code = self.codes[self.j]
            if self.anchor is not None:
                off = code - (self.anchor[1] + flip - self.anchor[0])
                if off < -self.tolerance_s:
                    self.j += 1
                    self.extra_codes += 1
                    continue
                if off > self.tolerance_s:
                    self.unmatched.add(key)
                    self.i += 1
                    continue
            out[key] = code
            self.anchor = (flip, code)
            self.i += 1
            self.j += 1
        return out


# -- the protocol -----------------------------------------------------------------------------


@dataclass
class ResumePoint:
    """Where a stopped session stands: the next trial id, trials done and aborted so far, images to show again."""

    next_id: int = 0
    completed: int = 0
    aborted: int = 0
    requeue: list = field(default_factory=list)


def trial_protocol(
    n_trials: int,
    queue_depth: int,
    images_per_trial: int,
    max_attempts: int | None = None,
    resume: ResumePoint | None = None,
):
    """The generator described above; `max_attempts` defaults to 2 * n_trials, `resume` continues a stopped
    session."""
    max_attempts = max_attempts if max_attempts is not None else 2 * n_trials
    resume = resume or ResumePoint()
    requested: deque[int] = deque()
    in_flight: deque[tuple[int, list]] = deque()
    requeue: list = list(resume.requeue)
    owed: set = set()  # id() of the requeued images of done trials (faulted), which get a trial more if need be
    next_id = resume.next_id
    completed, aborted = resume.completed, resume.aborted

    def may_start() -> bool:
        if next_id >= max_attempts:
            return False
        if completed + len(in_flight) + len(requested) < n_trials:
            return True
        # Every trial asked for is done or under way, but a done trial's faulted images wait to be shown again:
        # one trial more, whose plan takes them, once no plan already asked for will. (An aborted trial is not
        # counted done, so the trials after it take its images.)
        return not requested and any(id(it) in owed for it in requeue)

    while may_start() and len(requested) < queue_depth:
        yield RequestPlan(next_id)
        requested.append(next_id)
        next_id += 1

    while in_flight or requested:
        while requested and len(in_flight) < queue_depth:
            trial_id = requested.popleft()
            offer = yield TakeImages(trial_id, images_per_trial - min(len(requeue), images_per_trial))
            items, used = compose_plan(requeue, offer, images_per_trial)
            owed.difference_update(id(it) for it in requeue[:used])
            del requeue[:used]
            yield Present(trial_id, items, offer.source, offer.model_version)
            in_flight.append((trial_id, items))
        trial_id, items = in_flight.popleft()
        report = yield AwaitTrial(trial_id)
        if report.status == "done":
            rows = yield CollectResponses(trial_id)
            yield UpdateModel(rows)
            completed += 1
            again = requeued_unmeasured(trial_id, items, rows)
            owed.update(id(it) for it in again)
            requeue.extend(again)
        else:
            aborted += 1
            requeue.extend(requeued(trial_id, items))
        while may_start() and len(requested) + len(in_flight) < queue_depth:
            yield RequestPlan(next_id)
            requested.append(next_id)
            next_id += 1
    return Finish(completed, aborted)
