"""On resume, a trial shown while nothing usable was recorded has its images shown again."""

import json
import shutil

import pytest

from controller.config import with_overrides
from controller.session import run_in_process
from records.resume import resume_point
from records.store import SessionStore
from tests.helpers import small_rig


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    rig = with_overrides(small_rig(n_trials=3), fixation={"break_probability": 0.0}, model={"kind": "baseline"})
    path = tmp_path_factory.mktemp("requeue") / "s"
    run_in_process(rig, path)
    return rig, path


def _stopped_after_last_trial(recorded, tmp_path, cut_stream: bool):
    """The session as if its controller had stopped once the last trial ended, before binning it; cut_stream:
    and the recording had stopped at that trial's first onset (no batch after it was stored)."""
    rig, path = recorded
    copy = tmp_path / "s"
    shutil.copytree(path, copy)
    store = SessionStore.open(copy)
    last = store.conn.execute("SELECT MAX(trial_id) FROM trials").fetchone()[0]
    first_onset = store.conn.execute("SELECT MIN(onset_acq_s) FROM responses WHERE trial_id=?", (last,)).fetchone()[0]
    store.conn.execute("DELETE FROM responses WHERE trial_id=?", (last,))
    if cut_stream:
        store.conn.execute("DELETE FROM spike_batches WHERE t_end_s > ?", (first_onset,))
    store.conn.commit()
    return rig, store, last


def test_a_trial_recorded_into_the_void_is_shown_again(recorded, tmp_path):
    rig, store, last = _stopped_after_last_trial(recorded, tmp_path, cut_stream=True)
    try:
        point = resume_point(store, rig)
        hashes = json.loads(
            store.conn.execute("SELECT image_hashes FROM plans WHERE trial_id=?", (last,)).fetchone()[0]
        )
        valid = store.conn.execute("SELECT SUM(valid), COUNT(*) FROM responses WHERE trial_id=?", (last,)).fetchone()
    finally:
        store.close()
    assert valid == (0, len(hashes))  # binned, every window kept invalid
    assert [h for h, _, _ in point.requeue] == hashes
    assert all(why.startswith(f"requeued from trial {last}:") for _, _, why in point.requeue)


def test_a_trial_binned_from_the_store_is_not_shown_again(recorded, tmp_path):
    rig, store, last = _stopped_after_last_trial(recorded, tmp_path, cut_stream=False)
    try:
        point = resume_point(store, rig)
        valid = store.conn.execute("SELECT SUM(valid) FROM responses WHERE trial_id=?", (last,)).fetchone()[0]
    finally:
        store.close()
    assert valid == rig.trial.images_per_trial and point.requeue == []
