"""`cortexloop check --live` on an LSL rig whose stream name two outlets carry: a FAIL line naming both, no traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from controller.config import load_rig, with_overrides
from controller.live_check import check_live

pylsl = pytest.importorskip("pylsl")
pytestmark = pytest.mark.usefixtures("lsl_on_this_machine")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]


def test_a_duplicate_stream_name_is_a_fail_line_not_a_traceback():
    tag = uuid.uuid4().hex[:8]
    spikes, codes = f"cortexloop-check-spikes-{tag}", f"cortexloop-check-codes-{tag}"
    outlets = [
        pylsl.StreamOutlet(pylsl.StreamInfo(spikes, "Spikes", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, source_id))
        for source_id in ("rig-a", "rig-b")
    ] + [pylsl.StreamOutlet(pylsl.StreamInfo(codes, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, codes))]
    rig = load_rig(ROOT / "rigs" / "lsl.toml")
    rig = with_overrides(rig, cortex={"lsl": {"spike_stream": spikes, "code_stream": codes}})
    lines: list[str] = []
    assert check_live(rig, {}, seconds=0.5, wait_s=5.0, out=lines.append) is False
    fail = [line for line in lines if line.startswith("FAIL acquisition")]
    assert fail and "2 outlets carry this name" in fail[0], lines
    del outlets
