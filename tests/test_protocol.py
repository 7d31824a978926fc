"""The trial protocol, run with no hardware: a test plays the engine by answering each command."""
from dataclasses import dataclass

import pytest

from controller import protocol as p


@dataclass
class FakePlan:
    trial_id: int
    items: list
    n_requeued: int

    def requeue_items(self):
        return list(self.items)


@dataclass
class Report:
    trial_id: int
    status: str


def run(n_trials, depth, aborts=(), max_attempts=None, images=2):
    """Drive the protocol; returns the command log and the final result."""
    gen = p.trial_protocol(n_trials, depth, max_attempts)
    log, result = [], None
    try:
        while True:
            cmd = gen.send(result)
            log.append(cmd)
            result = None
            if isinstance(cmd, p.TakePlan):
                used = cmd.requeued[:images]
                items = used + [f"t{cmd.trial_id}i{k}" for k in range(images - len(used))]
                result = FakePlan(cmd.trial_id, items, len(used))
            elif isinstance(cmd, p.AwaitTrial):
                result = Report(cmd.trial_id, "aborted" if cmd.trial_id in aborts else "done")
            elif isinstance(cmd, p.CollectResponses):
                result = {"trial_id": cmd.trial_id}
    except StopIteration as stop:
        return log, stop.value


def kinds(log):
    return [type(c).__name__ for c in log]


def test_plans_are_requested_ahead_and_presented_before_the_previous_trial_ends():
    log, fin = run(4, depth=2)
    assert fin == p.Finish(completed=4, aborted=0)
    k = kinds(log)
    # Two plans requested before anything happens, both presented before the first trial is awaited.
    assert k[:2] == ["RequestPlan", "RequestPlan"]
    first_await = k.index("AwaitTrial")
    assert k[:first_await].count("Present") == 2
    # Every trial: awaited, collected, model updated, in order.
    awaited = [c.trial_id for c in log if isinstance(c, p.AwaitTrial)]
    assert awaited == [0, 1, 2, 3]
    # The plan for trial j is requested only after trial j-2 was collected (the model sees data first).
    for c_i, c in enumerate(log):
        if isinstance(c, p.RequestPlan) and c.trial_id >= 2:
            collected = [x.trial_id for x in log[:c_i] if isinstance(x, p.CollectResponses)]
            assert c.trial_id - 2 in collected


def test_no_more_trials_than_asked():
    log, fin = run(3, depth=4)
    assert sum(isinstance(c, p.RequestPlan) for c in log) == 3
    assert fin.completed == 3


def test_aborted_trial_is_not_collected_and_its_images_go_first_into_the_next_plan():
    log, fin = run(4, depth=2, aborts={1})
    assert fin == p.Finish(completed=4, aborted=1)
    collected = [c.trial_id for c in log if isinstance(c, p.CollectResponses)]
    assert 1 not in collected and len(collected) == 4
    take_after_abort = [c for c in log if isinstance(c, p.TakePlan) and c.requeued]
    assert take_after_abort, "the aborted trial's images were not requeued"
    assert take_after_abort[0].requeued == ["t1i0", "t1i1"]
    # Once used, requeued images are not offered again.
    later = [c for c in log if isinstance(c, p.TakePlan) and c.trial_id > take_after_abort[0].trial_id]
    assert all(not c.requeued for c in later)


def test_max_attempts_ends_a_session_that_keeps_aborting():
    log, fin = run(5, depth=2, aborts=set(range(100)), max_attempts=6)
    assert fin == p.Finish(completed=0, aborted=6)
    assert sum(isinstance(c, p.Present) for c in log) == 6


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_every_presented_trial_is_awaited_exactly_once(depth):
    log, fin = run(7, depth=depth, aborts={2, 5})
    presented = [c.plan.trial_id for c in log if isinstance(c, p.Present)]
    awaited = [c.trial_id for c in log if isinstance(c, p.AwaitTrial)]
    assert presented == awaited
    assert fin.completed == 7
