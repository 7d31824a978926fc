"""`cortexloop report`: a short simulated session's HTML page, opened in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from controller.config import load_rig, parse_rig
from records.nwb import image_kind
from records.report import repeat_noise_ceiling
from records.store import SessionStore
from tests.helpers import SIM_RIG

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)


@pytest.fixture(scope="module")
def report(short_session, tmp_path_factory):
    """The page, written by `cortexloop report SESSION --out FILE`."""
    from controller.cli import main

    rig, path, summary = short_session
    out = tmp_path_factory.mktemp("report") / "report.html"
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert main(["report", str(path), "--out", str(out)]) == 0
    assert said.getvalue() == f"report: {out}\n"
    return out


def _kept(path) -> dict:
    """How many entries of each over-the-session kind the store's log holds."""
    import sqlite3

    db = sqlite3.connect(path / "session.sqlite")
    return {
        k: db.execute("SELECT COUNT(*) FROM log WHERE kind = ?", (k,)).fetchone()[0]
        for k in ("plan_latency", "heldout", "evidence")
    }


def _data_images(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_has_every_section_and_every_image_decodes(short_session, report):
    import matplotlib.image as mpimg

    rig, path, summary = short_session
    assert summary["status"] == "completed"
    text = report.read_text()
    for section in (
        "overview",
        "accuracy",
        "predicted",
        "images",
        "neurons",
        "evidence",
        "timing",
        "clock",
        "compression",
        "rig",
    ):
        assert f"<section id='{section}'>" in text
    pngs = _data_images(text)
    # accuracy, predicted/observed, MEI check, images by reason, per-neuron images, evidence, model versions,
    # frame timing, clock alignment; and a curve for each kind the session kept over trials (the loop latency of
    # every plan always; accuracy and evidence as the live status measured them, which depends on how long the
    # session ran)
    kept = _kept(path)
    assert kept["plan_latency"] > 0
    assert len(pngs) == 9 + sum(n > 0 for n in kept.values()) == text.count("<img ")
    for png in pngs:
        pixels = mpimg.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100 and pixels.std() > 0.01
    # Self-contained: nothing fetched, nothing run.
    assert "<script" not in text and not re.search(r"""(src|href)=["'](?!data:|#)""", text)
    # What the store does not hold is said, and only that.
    missing = re.findall(r"<b>([^<]+): not recorded in this session\.</b>", text)
    assert sorted(missing) == sorted(
        title
        for kind, title in [
            ("heldout", "Held-out accuracy after each trial"),
            ("evidence", "Hypothesis evidence after each trial"),
        ]
        if not kept[kind]
    )
    assert "Compression: not run on this session." in text
    # The rig file, as stored, written as TOML that reads back as the same rig.
    rig_text = re.search(r"<section id='rig'>.*?<pre>(.*?)</pre>", text, re.S).group(1)
    assert parse_rig(tomllib.loads(html.unescape(rig_text))) == rig


def test_images_are_grouped_by_the_recorded_reason(short_session, report):
    rig, path, summary = short_session
    store = SessionStore.open(path)
    try:
        reasons = {p["trial_id"]: p["reasons"] for p in store.plans()}
        kinds = Counter(image_kind(reasons[t][i]) for t, i, *_ in store.onsets())
    finally:
        store.close()
    assert sum(kinds.values()) == summary["images_shown"]
    assert {"random", "repeat", "mei"} <= set(kinds)
    text = report.read_text()
    for kind, n in kinds.items():
        assert re.search(rf"<tr><td>{re.escape(kind)}</td><td>{n}</td>", text), kind


def test_repeat_noise_ceiling_matches_the_known_answer():
    """Poisson counts: single-presentation noise variance = the mean, so the ceiling is known exactly."""
    rng = np.random.default_rng(0)
    lam = rng.gamma(4.0, 2.0, size=(400, 3)) * np.array([1.0, 0.3, 3.0])
    truth = np.sqrt(lam.var(0) / (lam.var(0) + lam.mean(0)))
    reps = 6
    counts = rng.poisson(np.repeat(lam, reps, axis=0)).astype(np.float64)
    hashes = [f"img{i}" for i in range(len(lam)) for _ in range(reps)]
    got = repeat_noise_ceiling(hashes, counts)
    assert got["images"] == 400 and got["presentations"] == 400 * reps
    np.testing.assert_allclose(got["ceiling"], truth, atol=0.03)
    # Images shown once say nothing about noise; too few repeated images give no ceiling.
    assert repeat_noise_ceiling(["a", "b", "c", "a", "b"], counts[:5]) is None


def test_report_command_says_where_and_refuses_a_directory_without_a_session(report, tmp_path, capsys):
    from controller.cli import main

    assert report.stat().st_size > 50_000
    assert main(["report", str(tmp_path)]) == 2
    assert "no session database" in capsys.readouterr().err


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


# Appended to a copy of the page: records errors and console.error calls, then each image's decoded size.
PROBE = """<script>
var problems = [];
window.addEventListener('error', function (e) { problems.push('error: ' + (e.message || e.type)); }, true);
var consoleError = console.error;
console.error = function () { problems.push('console.error: ' + Array.from(arguments).join(' ')); };
window.addEventListener('load', function () {
  var sizes = Array.from(document.images).map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; });
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({sizes: sizes, problems: problems});
  document.body.appendChild(out);
});
</script>"""


@needs_chromium
def test_chromium_shows_the_report_without_errors_and_decodes_every_image(report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "report.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", report.resolve().as_uri(), tmp=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    # The page has no scripts: any console message at all is a problem (blocked content, a decode error).
    assert not [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05  # a page, not a blank screen

    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</head>", PROBE + "</head>", 1))
    run = _chromium("--dump-dom", "--virtual-time-budget=20000", probed.resolve().as_uri(), tmp=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, "the page never finished loading"
    result = json.loads(html.unescape(found.group(1)))
    assert result["problems"] == []
    assert len(result["sizes"]) == report.read_text().count("<img ") >= 10
    for complete, width, height in result["sizes"]:
        assert complete and width > 100 and height > 100


def test_a_session_that_recorded_nothing_gets_a_report_saying_so(tmp_path):
    from records.report import write_report

    SessionStore.create(tmp_path / "empty", load_rig(SIM_RIG).model_dump_json()).close()
    text = write_report(tmp_path / "empty").read_text()
    assert "<img " not in text
    missing = re.findall(r"<b>([^<]+): not recorded in this session\.</b>", text)
    assert {"Summary", "Images shown", "Predicted against observed responses", "Clock alignment"} <= set(missing)
    assert "running or killed (no status stored)" in text
