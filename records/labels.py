"""Which trial and image each recorded event code belongs to, after the fact, from the store.

A native stream labels its codes (trial id, image index); plain code words read
from TTL lines (Open Ephys) or markers (LSL) carry none. Onset codes are paired
with the presenter's onsets in order by the engine's own rule
(protocol.OnsetLabeller: a lost or extra code is noticed from the spacing);
trial start and end codes, one of each per trial, are paired with the stored
trials in order. Used where the store is read back: resuming a session, the NWB
export.
"""

from __future__ import annotations

from contract import messages as m
from controller import protocol as p


def onset_code_times(events: list[tuple], onsets: list[tuple], timing) -> dict[tuple[int, int], float]:
    """{(trial_id, index): acquisition time of its onset code}. events: store.event_codes(clock="acquisition")
    rows; onsets: store.onsets() rows."""
    labelled = {(tid, idx): t for _, _, code, t, _, tid, idx, _ in events if code == m.Codes.IMAGE_ONSET and tid >= 0}
    plain = [t for _, _, code, t, _, tid, *_ in events if code == m.Codes.IMAGE_ONSET and tid < 0]
    if plain:
        labeller = p.OnsetLabeller(p.label_tolerance_s(timing))
        for tid, idx, _, flip, _ in onsets:
            if (tid, idx) not in labelled:
                labeller.add_flip((tid, idx), flip)
        for t in plain:
            labeller.add_code(t)
        labelled.update(labeller.pair())
    return labelled


def trial_spans(events: list[tuple], trial_ids: list[int]) -> list[dict]:
    """[{trial_id, start, stop, status}] from the trial start and end (or abort) codes on the acquisition clock;
    unlabelled codes are given to the stored trials in order."""
    spans, opened = [], {}
    plain_starts = [t for _, _, code, t, _, tid, *_ in events if code == m.Codes.TRIAL_START and tid < 0]
    plain_ends = [
        (t, code)
        for _, _, code, t, _, tid, *_ in events
        if code in (m.Codes.TRIAL_END, m.Codes.TRIAL_ABORT) and tid < 0
    ]
    for _, _, code, t, _, tid, *_ in events:
        if tid < 0:
            continue
        if code == m.Codes.TRIAL_START:
            opened[tid] = t
        elif code in (m.Codes.TRIAL_END, m.Codes.TRIAL_ABORT) and tid in opened:
            spans.append(
                {
                    "trial_id": tid,
                    "start": opened.pop(tid),
                    "stop": t,
                    "status": "done" if code == m.Codes.TRIAL_END else "aborted",
                }
            )
    if plain_starts:
        labelled = {s["trial_id"] for s in spans}
        unlabelled = [tid for tid in sorted(trial_ids) if tid not in labelled]
        for tid, start, (stop, code) in zip(unlabelled, plain_starts, plain_ends):
            if stop >= start:
                spans.append(
                    {
                        "trial_id": tid,
                        "start": start,
                        "stop": stop,
                        "status": "done" if code == m.Codes.TRIAL_END else "aborted",
                    }
                )
    return sorted(spans, key=lambda s: s["start"])
