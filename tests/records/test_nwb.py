"""NWB export of a short session: what it holds, and that nwbinspector (what DANDI runs) accepts it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter

import numpy as np
import pytest

from contract import messages as m
from records.nwb import image_kind
from records.store import SessionStore
from tests.helpers import SIM_RIG


@pytest.fixture(scope="module")
def exported(short_session, tmp_path_factory):
    from controller.cli import main

    rig, path, summary = short_session
    out = tmp_path_factory.mktemp("nwb") / "s.nwb"
    assert main(["export-nwb", str(path), "--out", str(out)]) == 0
    return out


def _inspect(path) -> list:
    from nwbinspector import inspect_nwbfile, load_config

    return list(inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")))


def test_nwbinspector_finds_nothing_critical_and_no_best_practice_violation(exported):
    messages = _inspect(exported)
    levels = Counter(msg.importance.name for msg in messages)
    assert levels["CRITICAL"] == 0 and levels["BEST_PRACTICE_VIOLATION"] == 0, [
        (msg.importance.name, msg.check_function_name, msg.message) for msg in messages
    ]
    # The rig sets every piece of metadata, and every image is described: not even a suggestion is left.
    assert [(msg.check_function_name, msg.object_name) for msg in messages] == []


def test_the_simulated_rigs_defaults_pass_too(short_session, tmp_path):
    """A session stored with no experimenter or institution: the simulated subject is enough for DANDI.

    Its stored rig also has a key this version no longer knows, in a section the export does not read (as a
    session recorded by an older cortexloop would): it still exports.
    """
    from records.nwb import export_nwb

    rig, path, summary = short_session
    copy = tmp_path / "defaults"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("sockets"))
    stored = json.loads(rig.model_dump_json())
    for key in ("experimenter", "institution", "lab"):
        stored["session"].pop(key)
    stored["selection"]["retired_key_ms"] = 150.0
    db = sqlite3.connect(copy / "session.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE key = 'rig'", (json.dumps(stored),))
    db.commit()
    db.close()
    export_nwb(copy, tmp_path / "d.nwb")
    found = {(msg.importance.name, msg.check_function_name) for msg in _inspect(tmp_path / "d.nwb")}
    assert found == {
        ("BEST_PRACTICE_SUGGESTION", "check_experimenter_exists"),
        ("BEST_PRACTICE_SUGGESTION", "check_institution"),
    }


def test_nwb_holds_units_trials_presentations_and_described_images(short_session, exported):
    from pynwb import NWBHDF5IO

    rig, path, summary = short_session
    store = SessionStore.open(path)
    try:
        onsets = store.onsets()
        reasons = {p["trial_id"]: p["reasons"] for p in store.plans()}
        n_events = len(store.event_codes(clock="acquisition"))
    finally:
        store.close()
    first_reason = {}
    for t, i, h, *_ in onsets:
        first_reason.setdefault(h, reasons[t][i])
    with NWBHDF5IO(str(exported), "r") as io:
        f = io.read()
        s = rig.session
        assert (f.subject.subject_id, f.subject.species, f.subject.sex, f.subject.age) == (
            s.subject_id,
            s.subject_species,
            s.subject_sex,
            s.subject_age,
        )
        assert "simulated" in f.subject.description
        assert list(f.experimenter) == ["Doe, Jane"] and f.institution == "Test Institute"
        assert list(f.keywords) == list(s.keywords)
        assert f.units.resolution == pytest.approx(1 / s.acquisition_sample_rate_hz)
        assert len(f.units) == summary["neurons"]
        assert sum(len(f.units["spike_times"][i]) for i in range(len(f.units))) == summary["spikes_received"]
        assert len(f.trials) == summary["trials_done"] + summary["trials_aborted"]
        pres = f.intervals["presentations"].to_dataframe()
        assert len(pres) == summary["trials_done"] * rig.trial.images_per_trial
        assert (pres["stop_time"] > pres["start_time"]).all()
        assert (pres["window_start"] >= pres["start_time"]).all()

        # Every image shown, in the order first shown, each saying its hash, kind and first reason.
        images = f.stimulus_template["images"]
        assert [im.name for im in images.order_of_images.data] == list(first_reason)
        for h, why in first_reason.items():
            desc = images.images[h].description
            assert h in desc and f"kind: {image_kind(why)}" in desc and desc.endswith(why)
        onset_series = f.stimulus["image_onsets"]
        assert len(onset_series.data) == len(onsets) == summary["images_shown"]
        order = list(first_reason)
        assert [order[i] for i in onset_series.data[:]] == [o[2] for o in onsets]

        codes = f.acquisition["event_codes"].to_dataframe()
        assert len(codes) == n_events
        assert (codes["meaning"][codes["code"] == m.Codes.IMAGE_ONSET] == "IMAGE_ONSET").all()
        assert (codes["code"] == m.Codes.IMAGE_ONSET).sum() == summary["images_shown"]

        align = f.acquisition["clock_alignment"].to_dataframe()
        assert len(align) == summary["images_shown"]
        rate = np.polyfit(align["presenter_clock"], align["acquisition_clock"], 1)[0]
        assert (rate - 1) * 1e6 == pytest.approx(rig.cortex.recording.clock_drift_ppm, abs=1.0)
        assert np.abs(align["residual"]).max() * 1000 == pytest.approx(
            summary["clock_alignment"]["residual_max_ms"], abs=1e-6
        )


def test_a_session_that_recorded_nothing_exports_and_passes(tmp_path):
    """Killed before its first spike batch: an NWB file with the metadata and nothing else, still acceptable."""
    from controller.config import load_rig
    from records.nwb import export_nwb

    SessionStore.create(tmp_path / "empty", load_rig(SIM_RIG).model_dump_json()).close()
    result = export_nwb(tmp_path / "empty", tmp_path / "e.nwb")
    assert (result["units"], result["trials"], result["presentations"], result["images"]) == (0, 0, 0, 0)
    levels = Counter(msg.importance.name for msg in _inspect(tmp_path / "e.nwb"))
    assert set(levels) == {"BEST_PRACTICE_SUGGESTION"}
