"""`cortexloop check RIG --live` against a running recording system (the virtual cortex process, real time)."""

import json
import subprocess
import sys

from controller.config import with_overrides
from tests.helpers import cli_env, serve, small_rig
from transport.launch import prepare_session_dir


def test_live_check_sees_the_stream_the_units_and_the_test_code(tmp_path):
    rig = with_overrides(small_rig(speed="realtime"), display={"presenter": "headless"})
    prepare_session_dir(rig, tmp_path / "s")
    cortex = serve("cortex", tmp_path / "s")
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller.cli",
                "check",
                str(tmp_path / "s" / "rig.json"),
                "--live",
                "--seconds",
                "2",
                "--endpoints",
                str(tmp_path / "s" / "endpoints.json"),
            ],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        cortex.terminate()
        cortex.wait(10)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    acq = [x for x in lines if "acquisition:" in x][0]
    assert acq.startswith(("OK", "WARN")) and f"{rig.cortex.population.n_neurons} units" in acq
    ev = [x for x in lines if "event output:" in x][0]
    assert ev.startswith("OK") and "recorded by the acquisition system" in ev
    assert [x for x in lines if "display:" in x][0].startswith("OK")


def test_live_check_says_what_is_missing_when_no_stream_comes(tmp_path):
    rig = with_overrides(small_rig(speed="realtime"), display={"presenter": "headless"})
    prepare_session_dir(rig, tmp_path / "s")
    from controller.live_check import check_live

    lines = []
    endpoints = json.loads((tmp_path / "s" / "endpoints.json").read_text())
    assert not check_live(rig, endpoints, seconds=0.5, wait_s=1.0, out=lines.append)
    assert lines[0].startswith("FAIL acquisition: no stream described itself within 1 s")
