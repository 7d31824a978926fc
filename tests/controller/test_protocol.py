"""The trial protocol and its rules, run with no hardware: a test plays the engine by answering each command."""

from dataclasses import dataclass

import numpy as np
import pytest

from controller import protocol as p


@dataclass
class Report:
    trial_id: int
    status: str


def run(n_trials, depth, aborts=(), max_attempts=None, images=2):
    """Drive the protocol; returns the command log and the final result."""
    gen = p.trial_protocol(n_trials, depth, images, max_attempts)
    log, result = [], None
    try:
        while True:
            cmd = gen.send(result)
            log.append(cmd)
            result = None
            if isinstance(cmd, p.TakeImages):
                result = p.Offer([(f"t{cmd.trial_id}i{k}", None, "model") for k in range(cmd.n)], "model", 0)
            elif isinstance(cmd, p.AwaitTrial):
                result = Report(cmd.trial_id, "aborted" if cmd.trial_id in aborts else "done")
            elif isinstance(cmd, p.CollectResponses):
                result = [{"trial_id": cmd.trial_id}]
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
    presents = [c for c in log if isinstance(c, p.Present)]
    requeued = [c for c in presents if any(it[2].startswith("requeued") for it in c.items)]
    assert len(requeued) == 1, "the aborted trial's images were not shown again exactly once"
    first = requeued[0]
    assert first.trial_id > 1
    assert [(h, why) for h, _, why in first.items] == [
        ("t1i0", "requeued from trial 1: model"),
        ("t1i1", "requeued from trial 1: model"),
    ]
    # The model was asked for no images that trial (both slots were requeued ones).
    take = [c for c in log if isinstance(c, p.TakeImages) and c.trial_id == first.trial_id]
    assert take[0].n == 0


def test_max_attempts_ends_a_session_that_keeps_aborting():
    log, fin = run(5, depth=2, aborts=set(range(100)), max_attempts=6)
    assert fin == p.Finish(completed=0, aborted=6)
    assert sum(isinstance(c, p.Present) for c in log) == 6


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_every_presented_trial_is_awaited_exactly_once(depth):
    log, fin = run(7, depth=depth, aborts={2, 5})
    presented = [c.trial_id for c in log if isinstance(c, p.Present)]
    awaited = [c.trial_id for c in log if isinstance(c, p.AwaitTrial)]
    assert presented == awaited
    assert fin.completed == 7


# ---------------------------------------------------------------- rules
def test_compose_plan_puts_requeued_images_first_and_fills_from_the_offer():
    offer = p.Offer([("m0", None, "a"), ("m1", None, "b"), ("m2", None, "c")], "model", 4)
    items, used = p.compose_plan([("r0", None, "x")], offer, 3)
    assert [i[0] for i in items] == ["r0", "m0", "m1"] and used == 1
    items, used = p.compose_plan([("r0", None, "x"), ("r1", None, "y"), ("r2", None, "z"), ("r3", None, "w")], offer, 3)
    assert [i[0] for i in items] == ["r0", "r1", "r2"] and used == 3


def test_pool_offer_draws_distinct_pool_images_and_says_why():
    pool = np.arange(20 * 2 * 2 * 3, dtype=np.uint8).reshape(20, 2, 2, 3)
    hashes = [f"h{i}" for i in range(20)]
    offer = p.pool_offer(pool, lambda px: hashes[int(px.flat[0]) // 12], np.random.default_rng(0), 5)
    assert offer.source == "pool" and offer.model_version == -1
    idx = [int(why.split("#")[1]) for _, _, why in offer.items]
    assert len(set(idx)) == 5
    for (h, px, why), i in zip(offer.items, idx):
        assert h == hashes[i] and np.array_equal(px, pool[i]) and why.startswith("pool fallback")


def test_plan_deadline_is_the_earlier_of_presenter_need_and_stall_timeout():
    assert p.plan_deadline(100.0, 30.0, None) == 130.0  # virtual clock: only a dead model is late
    assert p.plan_deadline(100.0, 30.0, 101.2) == 101.2
    assert p.plan_deadline(100.0, 30.0, 500.0) == 130.0


def test_a_window_overlapping_lost_spikes_or_without_an_onset_time_is_invalid():
    starts, ends = p.response_windows(np.array([1.0, 2.0, 3.0, 4.0]), 0.05, 0.2)
    valid = p.windows_valid(starts, ends, [(2.19, 2.5)], np.array([True, True, True, False]))
    assert valid.tolist() == [True, False, True, False]
    # An interval that only touches a window's end does not spoil it (windows are half-open).
    assert p.windows_valid(starts, ends, [(1.2, 1.5)], np.ones(4, bool)).tolist() == [True] * 4


class Fit:
    def to_acquisition(self, t):
        return 10.0 + t


def test_onset_times_prefer_the_recorded_code_then_the_clock_fit_then_unknown():
    times, known = p.onset_times([5.0, None, None], [1.0, 2.0, 3.0], Fit())
    assert times.tolist() == [5.0, 12.0, 13.0] and known.all()
    times, known = p.onset_times([5.0, None], [1.0, 2.0], None)  # no fit yet: unknown, not a crash
    assert times[0] == 5.0 and np.isnan(times[1]) and known.tolist() == [True, False]


def test_photodiode_onsets_take_the_first_edge_after_each_code_within_the_lag():
    codes = np.array([1.0, 2.0, 3.0, np.nan])
    edges = np.array([0.5, 1.012, 1.02, 2.3, 3.004])
    times, found = p.photodiode_onsets(codes, edges, 0.05)
    assert found.tolist() == [True, False, True, False]  # 2.3 is too late for the code at 2.0
    assert times[0] == 1.012 and times[1] == 2.0 and times[2] == 3.004 and np.isnan(times[3])


def test_pool_offer_draws_only_from_the_allowed_pool_images():
    pool = np.arange(20 * 2 * 2 * 3, dtype=np.uint8).reshape(20, 2, 2, 3)
    allowed = np.array([3, 7, 11, 15])
    for seed in range(5):
        offer = p.pool_offer(pool, lambda px: "h", np.random.default_rng(seed), 3, allowed)
        idx = [int(why.split("#")[1]) for _, _, why in offer.items]
        assert len(set(idx)) == 3 and set(idx) <= set(allowed.tolist())
