"""Export a stored session to NWB (Neurodata Without Borders) with pynwb, in a form DANDI accepts.

All times are on the acquisition clock (the clock the spikes were stamped in),
relative to the first recorded spike batch or event code. Contents:

- metadata from the rig file's [session] section: subject, experimenter,
  institution, lab, description, keywords (the simulated rig's defaults mark the
  subject as simulated);
- units: one unit per neuron, its spike times; resolution 1 / the acquisition
  sample rate; where `cortexloop interrogate` ran, each unit's family and its
  fingerprint in words (columns interpreted_family, interpretation);
- trials: start and stop (from the recorded TRIAL_START / TRIAL_END / TRIAL_ABORT
  event codes), status;
- intervals "presentations": one row per response (image onset of a completed
  trial), with image hash, index into the stimulus templates, trial, the spike
  count in the response window, why the image was chosen and which model version
  chose it;
- stimulus templates: every image shown (RGB or grayscale) in an Images
  container, in the order it was first shown, each described by its hash, its
  kind and why it was first shown; stimulus "image_onsets": an IndexSeries of
  every onset (aborted trials too) into those images;
- acquisition "event_codes": every event code as the acquisition system recorded
  it, with its meaning, trial and image;
- acquisition "clock_alignment": each onset's flip time on the presenter clock
  paired with its event code on the acquisition clock, the fitted
  acquisition = offset + rate x presenter and each pair's residual.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from acquisition.alignment import fit_clock
from contract import messages as m
from controller.config import parse_rig
from records.labels import onset_code_times, trial_spans
from records.store import SessionStore

CODE_NAMES = {v: k for k, v in vars(m.Codes).items() if not k.startswith("_") and isinstance(v, int)}


def image_kind(reason: str) -> str:
    """The kind of choice a reason records: its first word ("random", "selected", "synthesized", "mei", "repeat"),
    "requeued" (shown again after an aborted trial) or "pool fallback" (the model's plan was late)."""
    if reason.startswith("pool fallback"):
        return "pool fallback"
    return reason.split(" ", 1)[0] if reason else "unknown"


def first_shown(onsets: list[tuple], plans: list[dict]) -> dict[str, dict]:
    """For each image hash, in the order first shown: the trial, the index and the reason of its first onset."""
    reasons = {p["trial_id"]: p["reasons"] for p in plans}
    out: dict[str, dict] = {}
    for trial_id, idx, h, _flip, _frame in onsets:
        if h not in out:
            rs = reasons.get(trial_id, [])
            out[h] = {"trial_id": trial_id, "index": idx, "reason": rs[idx] if idx < len(rs) else "not recorded"}
    return out


def _session_description(rig, model_kind: str, n_trials: int, n_images: int, n_neurons: int) -> str:
    if rig.session.description:
        return rig.session.description
    return (
        f"cortexloop closed-loop session '{rig.session.name}': {n_trials} trials of "
        f"{rig.trial.images_per_trial} images ({rig.trial.on_ms:.0f} ms on, {rig.trial.off_ms:.0f} ms off), "
        f"{n_images} distinct images, {n_neurons} units; images chosen between trials by per-neuron models "
        f"({model_kind}) updated on the responses."
    )


def interpretations(session_dir: Path) -> dict[int, tuple[str, str]]:
    """{neuron: (family, fingerprint in words)} from compact/report.json where `cortexloop interrogate` wrote them."""
    path = Path(session_dir) / "compact" / "report.json"
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text()).get("neurons", [])
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {
        int(r["neuron"]): (r["interpretation"]["family"], r["interpretation"]["words"])
        for r in rows
        if isinstance(r, dict) and "interpretation" in r
    }


def export_nwb(session_dir: Path, out_path: Path) -> dict:
    from hdmf.common import DynamicTable
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.base import ImageReferences, Images
    from pynwb.epoch import TimeIntervals
    from pynwb.file import Subject
    from pynwb.image import GrayscaleImage, IndexSeries, RGBImage
    from pynwb.misc import Units

    store = SessionStore.open(session_dir)
    try:
        rig_dict = json.loads(store.rig_json())
        # Only the sections the export reads are validated (the others take their defaults), so a session stored
        # by a cortexloop whose other sections have changed since still exports.
        rig = parse_rig(
            {k: rig_dict[k] for k in ("session", "trial", "cortex", "display") if k in rig_dict},
            f"{session_dir} (stored rig)",
            stored=True,
        )
        created = float(store.meta("created_wall_s") or 0.0)
        recorded_neurons = store.meta("neurons")  # the acquisition source's own count
        batches = store.spike_batches()
        events = store.event_codes(clock="acquisition")
        responses = store.responses(valid_only=False)
        resp_rows = store.response_windows()
        onsets = store.onsets()
        stored_trials = store.trials()
        shown = first_shown(onsets, store.plans())
        for h in responses["image_hash"]:  # every response has an onset; kept in case the onset row was lost
            shown.setdefault(h, {"trial_id": -1, "index": -1, "reason": "not recorded"})
        pixels = {h: store.image(h) for h in shown}
    finally:
        store.close()
    starts = [b[2] for b in batches] + [e[3] for e in events]
    t0 = min(starts) if starts else 0.0
    s = rig.session

    neuron = np.concatenate([b[5] for b in batches]) if batches else np.zeros(0, np.uint16)
    n_neurons = max(
        int(recorded_neurons) if recorded_neurons is not None else int(rig.cortex.population.n_neurons),
        int(neuron.max()) + 1 if len(neuron) else 0,
    )
    n_trials_recorded = sum(1 for e in events if e[2] in (m.Codes.TRIAL_END, m.Codes.TRIAL_ABORT))
    nwb = NWBFile(
        session_description=_session_description(
            rig, str(rig_dict.get("model", {}).get("kind", "?")), n_trials_recorded, len(shown), n_neurons
        ),
        identifier=Path(session_dir).resolve().name,
        session_id=Path(session_dir).resolve().name,
        session_start_time=datetime.fromtimestamp(created, tz=timezone.utc),
        experiment_description=(
            "closed-loop image selection (cortexloop): spikes streamed in, per-neuron models "
            "trained between trials, images chosen or synthesized to discriminate hypotheses"
        ),
        experimenter=list(s.experimenter) or None,
        institution=s.institution or None,
        lab=s.lab or None,
        keywords=list(s.keywords) or None,
        subject=Subject(
            subject_id=s.subject_id,
            species=s.subject_species,
            sex=s.subject_sex,
            age=s.subject_age,
            description=s.subject_description,
        ),
        source_script="cortexloop export-nwb",
        source_script_file_name="records/nwb.py",
    )

    times = np.concatenate([b[6] for b in batches]) if batches else np.zeros(0)
    if len(times):  # a session that recorded no spike has no units table (an empty one trips the checkers)
        nwb.units = Units(
            name="units",
            resolution=1.0 / s.acquisition_sample_rate_hz,
            description=f"one unit per recorded neuron (stream neuron index = unit id); spike times "
            f"on the acquisition clock, resolution 1/{s.acquisition_sample_rate_hz:g} s",
        )
        interp = interpretations(session_dir)
        if interp:
            nwb.add_unit_column(
                "interpreted_family",
                "what the in-silico battery typed the unit's compact model as (cortexloop interrogate)",
            )
            nwb.add_unit_column("interpretation", "the unit's fingerprint in words (cortexloop interrogate)")
        for n in range(n_neurons):
            extra = {}
            if interp:
                family, words = interp.get(n, ("not interrogated", ""))
                extra = {"interpreted_family": family, "interpretation": words}
            nwb.add_unit(spike_times=np.sort(times[neuron == n]) - t0, **extra)

    trials = [
        {
            "start_time": sp["start"] - t0,
            "stop_time": sp["stop"] - t0,
            "trial_id": sp["trial_id"],
            "status": sp["status"],
        }
        for sp in trial_spans(events, [t["trial_id"] for t in stored_trials])
    ]
    if trials:  # an empty table with columns cannot be written
        nwb.add_trial_column("trial_id", "cortexloop trial id")
        nwb.add_trial_column("status", "done or aborted (fixation break)")
        for row in trials:
            nwb.add_trial(**row)
    n_trials = len(trials)

    order = list(shown)  # first shown first
    index = {h: i for i, h in enumerate(order)}
    templates = []
    for h in order:
        px, first = pixels[h], shown[h]
        desc = (
            f"image {h} (content hash); kind: {image_kind(first['reason'])}; first shown in trial "
            f"{first['trial_id']} as image {first['index']}, because: {first['reason']}"
        )
        cls = RGBImage if px.shape[-1] == 3 else GrayscaleImage
        templates.append(cls(name=h, data=px if px.shape[-1] == 3 else px[..., 0], description=desc))
    images = None
    if templates:
        images = Images(
            name="images",
            images=templates,
            order_of_images=ImageReferences(name="order_of_images", data=templates),
            description="every image shown, named by content hash, in the order first shown; "
            "uint8 pixels as the presenter showed them",
        )
        nwb.add_stimulus_template(images)

    # Onsets: every image shown (aborted trials too), on the acquisition clock through the recorded event code.
    acq_onset = onset_code_times(events, onsets, rig.timing)
    onset_pairs = [(o, acq_onset[(o[0], o[1])]) for o in onsets if (o[0], o[1]) in acq_onset]
    if images is not None and onset_pairs:
        nwb.add_stimulus(
            IndexSeries(
                name="image_onsets",
                data=np.array([index[o[2]] for o, _ in onset_pairs], np.uint32),
                unit="N/A",
                indexed_images=images,
                timestamps=np.array([t - t0 for _, t in onset_pairs]),
                description="every image onset (from its recorded event code), as an index into the stimulus "
                "template 'images'; aborted trials included",
            )
        )

    on_s = rig.trial.on_ms / 1000
    pres = TimeIntervals(
        name="presentations",
        description="image onsets of completed trials (acquisition clock) and the responses binned from them",
    )
    for col, desc in [
        ("trial_id", "trial"),
        ("image_hash", "content hash"),
        ("image_index", "index into images"),
        ("spike_counts", "spike count per neuron in the response window"),
        ("window_start", "response window start (s, session time)"),
        ("window_stop", "response window end (s, session time)"),
        ("valid", "no spikes lost in the window"),
        ("reason", "why the image was chosen"),
        ("model_version", "model version that chose it (-1: pool fallback)"),
    ]:
        pres.add_column(col, desc)
    for k, row in enumerate(resp_rows):
        onset = row[2] - t0
        h = responses["image_hash"][k]
        pres.add_row(
            start_time=onset,
            stop_time=onset + on_s,
            trial_id=int(row[0]),
            image_hash=h,
            image_index=index[h],
            spike_counts=responses["counts"][k].astype(np.float32),
            window_start=row[3] - t0,
            window_stop=row[4] - t0,
            valid=bool(responses["valid"][k]),
            reason=responses["reason"][k],
            model_version=int(responses["model_version"][k]),
        )
    if resp_rows:
        nwb.add_time_intervals(pres)

    if events:
        codes = DynamicTable(
            name="event_codes",
            description="event codes as the acquisition system recorded them: "
            + ", ".join(f"{c} {n}" for c, n in sorted(CODE_NAMES.items())),
        )
        for col, desc in [
            ("timestamp", "time on the acquisition clock (s, session time)"),
            ("code", "event code word"),
            ("meaning", "what the code marks"),
            ("stream", "acquisition stream that recorded it"),
            ("trial_id", "trial (-1: none)"),
            ("image_index_in_trial", "image within the trial (-1: none)"),
            ("image_hash", "content hash of the image shown ('' : none)"),
        ]:
            codes.add_column(col, desc)
        for ev in events:
            codes.add_row(
                timestamp=ev[3] - t0,
                code=int(ev[2]),
                meaning=CODE_NAMES.get(ev[2], "unknown"),
                stream=ev[0],
                trial_id=-1 if ev[5] is None else int(ev[5]),
                image_index_in_trial=-1 if ev[6] is None else int(ev[6]),
                image_hash=ev[7] or "",
            )
        nwb.add_acquisition(codes)

    fit = None
    if onset_pairs:
        p = np.array([o[3] for o, _ in onset_pairs])
        a = np.array([t for _, t in onset_pairs])
        fit = fit_clock(p, a)
        align = DynamicTable(
            name="clock_alignment",
            description=(
                f"presenter clock onto acquisition clock: acquisition = {fit.offset_s:.9f} s + "
                f"{fit.rate:.12f} x presenter (drift {fit.drift_ppm:.3f} ppm), least squares over "
                f"{fit.n_pairs} image onsets; residual rms {fit.residual_rms_s * 1000:.6f} ms, max "
                f"{fit.residual_max_s * 1000:.6f} ms. Raw clock readings, not session time."
            ),
        )
        for col, desc in [
            ("trial_id", "trial"),
            ("image_index_in_trial", "image within the trial"),
            ("presenter_clock", "flip time on the presenter clock (s, raw)"),
            ("acquisition_clock", "the onset's event code on the acquisition clock (s, raw)"),
            ("residual", "acquisition clock minus the fit (s)"),
        ]:
            align.add_column(col, desc)
        resid = a - fit.to_acquisition(p)
        for (o, t), r in zip(onset_pairs, resid):
            align.add_row(
                trial_id=int(o[0]),
                image_index_in_trial=int(o[1]),
                presenter_clock=float(o[3]),
                acquisition_clock=float(t),
                residual=float(r),
            )
        nwb.add_acquisition(align)

    # Written beside the target and renamed into place: a write that fails (a full disk) leaves no partial file.
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix}")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "nwb": str(out_path),
        "units": n_neurons if len(times) else 0,
        "spikes": int(len(times)),
        "trials": n_trials,
        "presentations": len(resp_rows),
        "images": len(templates),
        "onsets": len(onset_pairs),
        "event_codes": len(events),
        "clock_drift_ppm": None if fit is None else fit.drift_ppm,
    }
