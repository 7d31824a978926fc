"""Replacing a hung model worker, and not one that is only starting: the controller's request and the launcher's
verdict on it."""
import json
import time

from controller import messages as m
from controller import protocol as p
from controller.launch import MODEL_START_GRACE_S, restart_verdict
from controller.parts import MODEL_RESTART_REQUEST
from tests.test_engine import engine  # noqa: F401  (the fixture)


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


def test_the_controller_says_when_it_last_heard_from_the_worker_and_withdraws_a_request_it_no_longer_needs(engine):
    path = engine._restart_request_path
    assert path.name == MODEL_RESTART_REQUEST
    # A plan answered in time: the worker is heard from, at this wall time.
    engine.request_plan(p.RequestPlan(trial_id=0))
    before = time.time()
    offer = engine.take_images(p.TakeImages(trial_id=0, n=engine.timing.images_per_trial))
    assert offer.source == "model" and engine.model_reply_wall is not None
    engine.late_in_a_row = engine.RESTART_MODEL_AFTER_LATE
    engine.ask_model_restart()
    req = json.loads(path.read_text())
    assert req["last_reply_wall"] == engine.model_reply_wall and req["last_reply_wall"] <= time.time()
    assert req["last_reply_wall"] >= before - 60  # a wall-clock time, comparable with the launcher's
    # The next plan in time withdraws the request the launcher has not acted on, and the count starts again.
    engine.request_plan(p.RequestPlan(trial_id=1))
    assert engine.take_images(p.TakeImages(trial_id=1, n=engine.timing.images_per_trial)).source == "model"
    assert not path.exists() and engine.late_in_a_row == 0


def test_a_restarted_worker_that_answers_starts_a_fresh_late_count(engine):
    path = engine._restart_request_path
    engine.late_in_a_row = engine.RESTART_MODEL_AFTER_LATE
    engine.ask_model_restart()
    engine.late_in_a_row += 1  # late again while the new worker starts
    engine.responses_sent = 40
    # The new worker's first answer: no model yet (it has no responses), so the engine knows it was restarted.
    engine._on_model(m.ModelReply(request_id=engine.request_id + 1, op="status", model_version=-1))
    assert engine.late_in_a_row == 0 and not path.exists()
