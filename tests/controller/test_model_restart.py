"""Replacing a hung model worker, and not one that is only starting: the controller's request and the launcher's
verdict on it."""

import json
import time

from contract import messages as m
from contract.parts import MODEL_RESTART_REQUEST
from controller import protocol as p
from transport.launch import MODEL_START_GRACE_S, restart_verdict


def _request(tmp_path, last_reply_wall):
    path = tmp_path / MODEL_RESTART_REQUEST
    path.write_text(json.dumps({"why": "3 plans in a row not ready in time", "last_reply_wall": last_reply_wall}))
    return path


def test_a_worker_that_has_not_answered_since_its_start_is_given_its_start_up_grace(tmp_path):
    started = 1000.0
    # The controller last heard from the worker before this one was started: this one is starting, not hung.
    path = _request(tmp_path, started - 5.0)
    assert restart_verdict(path, started, started + 10.0) == ("3 plans in a row not ready in time", False)
    # One that never answers is replaced all the same, once the grace is over.
    assert restart_verdict(path, started, started + MODEL_START_GRACE_S)[1] is True
    # One that answered and then stopped answering is hung: replaced at once.
    assert restart_verdict(_request(tmp_path, started + 2.0), started, started + 3.0)[1] is True
    # Never heard from any worker at all: starting, within the grace.
    assert restart_verdict(_request(tmp_path, None), started, started + 1.0)[1] is False
    # A request that is not the controller's JSON is acted on as before.
    path.write_text("replace it")
    assert restart_verdict(path, started, started) == ("replace it", True)


def _late_plan(engine, trial_id):
    """A plan the worker does not answer in time (the request is never sent: a worker that is away)."""
    engine.plan_requests[trial_id] = {"id": -1, "sent_wall": 0.0, "trigger_wall": None}
    assert engine.take_images(p.TakeImages(trial_id=trial_id, n=engine.timing.images_per_trial)).source == "pool"


def test_the_controller_asks_for_a_replacement_only_when_the_worker_says_nothing_while_plans_are_late(engine):
    path = engine._restart_request_path
    assert path.name == MODEL_RESTART_REQUEST
    # A plan answered in time: the worker is heard from, at this wall time.
    engine.request_plan(p.RequestPlan(trial_id=0))
    assert engine.take_images(p.TakeImages(trial_id=0, n=engine.timing.images_per_trial)).source == "model"
    heard = engine.model_reply_wall
    assert heard is not None and abs(heard - time.time()) < 60  # wall clock, comparable with the launcher's
    for t in (1, 2):
        _late_plan(engine, t)
    assert not path.exists()
    _late_plan(engine, 3)  # the third late plan in a row, nothing heard since the first: hung
    req = json.loads(path.read_text())
    assert req["last_reply_wall"] == heard and req["why"] == "3 plans in a row not ready in time"
    # Any word from the worker withdraws the request the launcher has not acted on (it waits while a new
    # worker starts): a worker that speaks is slow, not hung.
    engine._on_model(m.ModelReply(request_id=engine.request_id, op="status", model_version=0))
    assert not path.exists()
    # It answered after the late plans began, so three more late plans are slowness, not a hang: no request.
    for t in (4, 5, 6):
        _late_plan(engine, t)
    assert engine.late_in_a_row == 6 and not path.exists()
    # A plan in time ends the run; a new run with a silent worker asks again.
    engine.request_plan(p.RequestPlan(trial_id=7))
    assert engine.take_images(p.TakeImages(trial_id=7, n=engine.timing.images_per_trial)).source == "model"
    assert engine.late_in_a_row == 0
    for t in (8, 9, 10):
        _late_plan(engine, t)
    assert path.exists()


def test_a_restarted_worker_that_answers_starts_a_fresh_late_count(engine):
    path = engine._restart_request_path
    for t in (1, 2, 3):
        _late_plan(engine, t)
    assert path.exists()
    _late_plan(engine, 4)  # late again while the new worker starts
    engine.responses_sent = 40
    # The new worker's first answer: no model yet (it has no responses), so the engine knows it was restarted.
    engine._on_model(m.ModelReply(request_id=engine.request_id + 1, op="status", model_version=-1))
    assert engine.late_in_a_row == 0 and not path.exists()
