"""Export a stored session to NWB (Neurodata Without Borders) with pynwb.

All times are on the acquisition clock (the clock the spikes were stamped in),
relative to the first recorded spike batch or event code. Contents:

- units: one unit per neuron, its spike times;
- trials: start and stop (from the recorded TRIAL_START / TRIAL_END / TRIAL_ABORT
  event codes), status;
- intervals "presentations": one row per image onset, with image hash, index
  into the stimulus templates, trial, the spike count in the response window, why
  the image was chosen and which model version chose it;
- stimulus templates: the images (RGB or grayscale) as an Images container,
  ordered as the presentations' image_index refers to them.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from controller import messages as m
from controller.store import SessionStore


def export_nwb(session_dir: Path, out_path: Path) -> dict:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.base import Images
    from pynwb.epoch import TimeIntervals
    from pynwb.image import GrayscaleImage, RGBImage

    store = SessionStore.open(session_dir)
    try:
        rig = json.loads(store.rig_json())
        created = float(store.meta("created_wall_s") or 0.0)
        batches = store.spike_batches()
        events = store.event_codes(clock="acquisition")
        responses = store.responses(valid_only=False)
        resp_rows = store.conn.execute(
            "SELECT trial_id, idx, onset_acq_s, window_start_s, window_end_s FROM responses ORDER BY trial_id, idx"
        ).fetchall()
        images_used = sorted(set(responses["image_hash"]))
        pixels = {h: store.image(h) for h in images_used}
    finally:
        store.close()
    starts = [b[2] for b in batches] + [e[3] for e in events]
    t0 = min(starts) if starts else 0.0

    nwb = NWBFile(session_description=f"cortexloop session {rig['session']['name']}",
                  identifier=Path(session_dir).resolve().name,
                  session_start_time=datetime.fromtimestamp(created, tz=timezone.utc),
                  experiment_description="closed-loop image selection (cortexloop)")
    neuron = np.concatenate([b[5] for b in batches]) if batches else np.zeros(0, np.uint16)
    n_neurons = max(int(rig["cortex"]["population"]["n_neurons"]), int(neuron.max()) + 1 if len(neuron) else 0)
    times = np.concatenate([b[6] for b in batches]) if batches else np.zeros(0)
    for n in range(n_neurons):
        nwb.add_unit(spike_times=np.sort(times[neuron == n]) - t0)

    nwb.add_trial_column("trial_id", "cortexloop trial id")
    nwb.add_trial_column("status", "done or aborted (fixation break)")
    opened: dict[int, float] = {}
    n_trials = 0
    for ev in events:
        code, t, tid = ev[2], ev[3], ev[5]
        if code == m.Codes.TRIAL_START:
            opened[tid] = t
        elif code in (m.Codes.TRIAL_END, m.Codes.TRIAL_ABORT) and tid in opened:
            nwb.add_trial(start_time=opened.pop(tid) - t0, stop_time=t - t0, trial_id=tid,
                          status="done" if code == m.Codes.TRIAL_END else "aborted")
            n_trials += 1

    templates = []
    for h in images_used:
        px = pixels[h]
        templates.append(RGBImage(name=h, data=px) if px.shape[-1] == 3 else GrayscaleImage(name=h, data=px[..., 0]))
    if templates:
        nwb.add_stimulus_template(Images(name="images", images=templates, description="shown images, by content hash"))
    index = {h: i for i, h in enumerate(images_used)}
    on_s = rig["trial"]["on_ms"] / 1000
    pres = TimeIntervals(name="presentations", description="image onsets (acquisition clock) and responses")
    for col, desc in [("trial_id", "trial"), ("image_hash", "content hash"), ("image_index", "index into images"),
                      ("spike_counts", "spike count per neuron in the response window"),
                      ("valid", "no spikes lost in the window"), ("reason", "why the image was chosen"),
                      ("model_version", "model version that chose it (-1: pool fallback)")]:
        pres.add_column(col, desc)
    for k, row in enumerate(resp_rows):
        onset = row[2] - t0
        pres.add_row(start_time=onset, stop_time=onset + on_s, trial_id=int(row[0]),
                     image_hash=responses["image_hash"][k], image_index=index[responses["image_hash"][k]],
                     spike_counts=responses["counts"][k].astype(np.float32), valid=bool(responses["valid"][k]),
                     reason=responses["reason"][k], model_version=int(responses["model_version"][k]))
    nwb.add_time_intervals(pres)
    out_path = Path(out_path)
    with NWBHDF5IO(str(out_path), "w") as io:
        io.write(nwb)
    return {"nwb": str(out_path), "units": n_neurons, "spikes": int(len(times)), "trials": n_trials,
            "presentations": len(resp_rows), "images": len(templates)}
