"""A session that reads its spikes and event codes from LSL streams (the virtual cortex publishing only those)."""

import sqlite3
import uuid

import pytest

from contract import messages as m
from controller.config import with_overrides
from controller.session import run_in_process
from tests.helpers import small_rig, stored_responses
from transport.launch import run_session, session_roles

pytest.importorskip("pylsl")
pytestmark = pytest.mark.usefixtures("lsl_on_this_machine")  # tests/conftest.py


def lsl_rig(rig, n_neurons):
    tag = uuid.uuid4().hex[:8]  # streams of their own: another test's outlets are never resolved
    return with_overrides(
        rig,
        cortex={
            "source": "lsl",
            "lsl": {
                "spike_stream": f"test-spikes-{tag}",
                "code_stream": f"test-codes-{tag}",
                "n_neurons": n_neurons,
                "virtual_cortex": True,
            },
        },
        endpoints={"acquisition_pub": "off", "openephys_pub": "off"},
    )


@pytest.mark.parametrize("speed", ["max"])
def test_lsl_session_records_the_same_responses_as_the_native_stream(tmp_path, speed):
    rig = with_overrides(
        small_rig(n_trials=4, speed=speed),
        model={"form": "stacked", "steps_per_trial": 5},
        fixation={"break_probability": 0.15},
    )
    # The native stream's session in this process: it records what the same rig does across processes
    # (tests/controller/test_engine.py). The other source needs the virtual cortex process that publishes it.
    native, _ = run_in_process(rig, tmp_path / "native")
    lrig = lsl_rig(rig, rig.cortex.population.n_neurons)
    assert session_roles(lrig) == ("cortex", "model", "presenter", "controller")
    lsl = run_session(lrig, tmp_path / "lsl")
    assert native["status"] == lsl["status"] == "completed", lsl["status"]
    assert lsl["spikes_received"] == native["spikes_received"] > 0 and lsl["trials_aborted"] == native["trials_aborted"]
    a, b = stored_responses(tmp_path / "native"), stored_responses(tmp_path / "lsl")
    assert len(a) == native["trials_done"] * rig.trial.images_per_trial > 0
    assert a == b
    db = sqlite3.connect(tmp_path / "lsl" / "session.sqlite")
    codes = db.execute("SELECT code, trial_id FROM event_codes WHERE clock = 'acquisition'").fetchall()
    assert sum(c == m.Codes.IMAGE_ONSET for c, _ in codes) == lsl["images_shown"]
    assert {t for _, t in codes} == {-1}  # markers carry code words only
