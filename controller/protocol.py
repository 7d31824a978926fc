"""The trial protocol: a generator that yields commands and receives their results.

It says what happens and in which order, and nothing about sockets or clocks,
so it runs against the session engine on a rig, against the simulated rig, or
against a test that plays the engine by hand:

    plan = yield TakePlan(trial_id, requeued)
    yield Present(plan)
    report = yield AwaitTrial(trial_id)

Pipelining: `queue_depth` plans are at the presenter while one trial runs; the
plan for trial j is requested as soon as trial j - queue_depth has finished, so
the model works while the rig shows trials.

Aborted trials (fixation broke) are recorded, and their images go first into the
next plan taken. `n_trials` counts completed trials; at most `max_attempts`
trials are started, so a subject that keeps breaking fixation ends the session.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RequestPlan:
    trial_id: int


@dataclass
class TakePlan:
    """Returns the plan for trial_id: the model's if it is ready in time, else pool images.

    `requeued` images go first; the plan says how many it used (plan.n_requeued).
    """

    trial_id: int
    requeued: list = field(default_factory=list)


@dataclass
class Present:
    plan: object


@dataclass
class AwaitTrial:
    """Returns the presenter's report for trial_id ("done" or "aborted")."""

    trial_id: int


@dataclass
class CollectResponses:
    """Returns the trial's responses once the acquisition clock has passed its last window."""

    trial_id: int


@dataclass
class UpdateModel:
    responses: object


@dataclass
class Finish:
    completed: int
    aborted: int


def trial_protocol(n_trials: int, queue_depth: int, max_attempts: int | None = None):
    max_attempts = max_attempts if max_attempts is not None else 2 * n_trials
    requested: deque[int] = deque()
    in_flight: deque[tuple[int, object]] = deque()
    requeue: list = []
    next_id = 0
    completed = aborted = 0

    def may_start() -> bool:
        return next_id < max_attempts and completed + len(in_flight) + len(requested) < n_trials

    while may_start() and len(requested) < queue_depth:
        yield RequestPlan(next_id)
        requested.append(next_id)
        next_id += 1

    while completed < n_trials and (in_flight or requested):
        while requested and len(in_flight) < queue_depth:
            trial_id = requested.popleft()
            plan = yield TakePlan(trial_id, list(requeue))
            del requeue[:plan.n_requeued]
            yield Present(plan)
            in_flight.append((trial_id, plan))
        trial_id, plan = in_flight.popleft()
        report = yield AwaitTrial(trial_id)
        if report.status == "done":
            responses = yield CollectResponses(trial_id)
            yield UpdateModel(responses)
            completed += 1
        else:
            aborted += 1
            requeue.extend(plan.requeue_items())
        while may_start() and len(requested) + len(in_flight) < queue_depth:
            yield RequestPlan(next_id)
            requested.append(next_id)
            next_id += 1
    return Finish(completed, aborted)
