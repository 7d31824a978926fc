"""Rig files: the default loads; unknown keys, out-of-range values and wrong types give clear errors."""

from pathlib import Path

import pytest

from controller.config import RigFileError, load_rig, with_overrides

RIGS = Path(__file__).resolve().parents[2] / "rigs"


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def test_default_rig_loads():
    rig = load_rig(RIGS / "sim.toml")
    assert rig.session.name == "sim"
    assert rig.trial.images_per_trial >= 1
    assert rig.trial_duration_ms == pytest.approx(
        rig.trial.fixation_ms + rig.trial.images_per_trial * (rig.trial.on_ms + rig.trial.off_ms) + rig.trial.iti_ms
    )


@pytest.mark.parametrize("path", sorted(RIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_rig_file_is_valid(path):
    load_rig(path)


def test_unknown_key_is_named_with_file(tmp_path):
    p = write(tmp_path, "[trial]\non_ms = 100\nonn_ms = 5\n")
    with pytest.raises(RigFileError) as err:
        load_rig(p)
    text = str(err.value)
    assert str(p) in text and "trial.onn_ms" in text and "unknown key" in text


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(RigFileError, match="stimuli"):
        load_rig(write(tmp_path, "[stimuli]\nx = 1\n"))


def test_out_of_range_value_names_key_and_bound(tmp_path):
    with pytest.raises(RigFileError) as err:
        load_rig(write(tmp_path, "[display]\nrefresh_hz = 5000\n"))
    assert "display.refresh_hz" in str(err.value) and "500" in str(err.value) and "5000" in str(err.value)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(RigFileError) as err:
        load_rig(write(tmp_path, '[trial]\nimages_per_trial = "five"\n'))
    assert "trial.images_per_trial" in str(err.value) and "integer" in str(err.value)


def test_nested_section_errors_give_full_path(tmp_path):
    with pytest.raises(RigFileError, match=r"cortex\.spiking\.fano_factor"):
        load_rig(write(tmp_path, "[cortex.spiking]\nfano_factor = 0.2\n"))


def test_window_must_be_ordered(tmp_path):
    with pytest.raises(RigFileError, match="window_end_ms must be greater"):
        load_rig(write(tmp_path, "[response]\nwindow_start_ms = 200\nwindow_end_ms = 100\n"))


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(RigFileError, match="not valid TOML"):
        load_rig(write(tmp_path, "[trial\n"))
    with pytest.raises(RigFileError, match="cannot read"):
        load_rig(tmp_path / "nope.toml")


def test_config_is_immutable_and_overrides_are_validated():
    rig = load_rig(RIGS / "sim.toml")
    with pytest.raises(Exception):
        rig.session.n_trials = 5
    assert with_overrides(rig, session={"n_trials": 7}).session.n_trials == 7
    with pytest.raises(RigFileError, match="session.n_trials"):
        with_overrides(rig, session={"n_trials": 0})


def test_check_command_prints_config_or_error(tmp_path, capsys):
    from controller.cli import main

    assert main(["check", str(RIGS / "sim.toml")]) == 0
    assert '"images_per_trial"' in capsys.readouterr().out
    bad = write(tmp_path, "[model]\nkind = 'gpt'\n")
    with pytest.raises(SystemExit) as code:
        main(["check", str(bad)])
    assert code.value.code == 2
    assert "model.kind" in capsys.readouterr().err


def test_a_retired_key_is_refused_in_a_rig_file_but_a_stored_session_with_it_still_opens():
    from controller.config import RigFileError, parse_rig

    old = {"selection": {"window_ms": 150.0, "objective": "js"}}
    with pytest.raises(
        RigFileError, match=r"selection.window_ms: no longer a key: the response window is \[response\]"
    ):
        parse_rig(old, "my.toml")
    assert parse_rig(old, "session.sqlite", stored=True).selection.objective == "js"


def test_a_compression_key_under_model_names_its_new_section(tmp_path):
    p = write(tmp_path, "[model]\nkind = 'compact'\ndistill_steps = 10\nprune_images = 50\n")
    with pytest.raises(RigFileError) as err:
        load_rig(p)
    text = str(err.value)
    assert "model.distill_steps: moved: this key now belongs under [compression] (compression.distill_steps)" in text
    assert "model.prune_images: moved" in text
    rig = load_rig(write(tmp_path, "[model]\nkind = 'compact'\n[compression]\ndistill_steps = 10\n"))
    assert rig.compression.distill_steps == 10 and rig.model.kind == "compact"


def test_a_fault_key_under_cortex_recording_names_rehearsal(tmp_path):
    with pytest.raises(RigFileError, match=r"cortex.recording.packet_loss: moved: .* \[rehearsal\]"):
        load_rig(write(tmp_path, "[cortex.recording]\nbatch_ms = 20\npacket_loss = 0.1\n"))
    assert load_rig(write(tmp_path, "[rehearsal]\npacket_loss = 0.1\n")).rehearsal.packet_loss == 0.1


def test_a_stored_session_with_keys_in_their_old_places_still_opens():
    from controller.config import parse_rig

    old = {
        "model": {"kind": "compact", "distill_steps": 7, "student_readout": "linear"},
        "cortex": {"recording": {"batch_ms": 10.0, "packet_loss": 0.2, "ledger": True}},
    }
    rig = parse_rig(old, "session.sqlite", stored=True)
    assert rig.compression.distill_steps == 7 and rig.compression.student_readout == "linear"
    assert rig.rehearsal.packet_loss == 0.2 and rig.rehearsal.ledger and rig.cortex.recording.batch_ms == 10.0
    assert "distill_steps" in old["model"]  # the caller's data is left as it was


def test_rehearsal_faults_are_refused_on_a_live_recording_system():
    from controller.config import RigConfig

    live = with_overrides(
        RigConfig(),
        cortex={"source": "openephys", "openephys": {"units": [[1, 1]]}},
        endpoints={"openephys_pub": "off"},
    )
    for fault in ({"packet_loss": 0.1}, {"stop_after_s": 5.0}, {"ledger": True}):
        with pytest.raises(RigFileError, match=r"rehearsal: .* is not the virtual cortex"):
            with_overrides(live, rehearsal=fault)
    # The same faults are fine where the virtual cortex publishes the Open Ephys stream (a rehearsal).
    rehearsed = with_overrides(live, cortex={"openephys": {"units": [[1, 1]], "virtual_cortex": True}})
    assert with_overrides(rehearsed, rehearsal={"packet_loss": 0.1}).rehearsal.packet_loss == 0.1
    # Defaults written out are no fault.
    assert with_overrides(live, rehearsal={"packet_loss": 0.0, "ledger": False}).cortex.source == "openephys"


def test_an_override_of_one_nested_key_keeps_the_sections_other_keys():
    rig = with_overrides(
        load_rig(RIGS / "sim.toml"),
        cortex={
            "population": {
                "custom": ["tests.cortex_custom_neurons:brightness_and_redness"],
                "type_shares": {"oriented": 1.0},
            }
        },
        selection={"mix": {"random": 0.5, "repeat": 0.5}},
    )
    again = with_overrides(rig, cortex={"population": {"n_neurons": 5}, "spiking": {"fano_factor": 2.0}})
    pop = again.cortex.population
    assert pop.n_neurons == 5 and pop.seed == rig.cortex.population.seed == 1
    assert pop.custom == ["tests.cortex_custom_neurons:brightness_and_redness"] and pop.type_shares == {"oriented": 1.0}
    assert again.cortex.spiking.fano_factor == 2.0 and again.cortex.spiking.latency_ms == (50.0, 80.0)
    assert again.cortex.recording == rig.cortex.recording
    # A table of values (selection.mix, population.type_shares) is one value: an override replaces it whole.
    assert with_overrides(rig, selection={"mix": {"random": 1.0}}).selection.mix == {"random": 1.0}
    assert again.selection.mix == {"random": 0.5, "repeat": 0.5}
