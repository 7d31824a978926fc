"""The Model part of a replay: each trial's recorded plan, handed back when the engine asks for it."""

from __future__ import annotations

import numpy as np

from contract import messages as m
from contract.parts import InProcessPart


class StoredPlans(InProcessPart):
    """A replay's Model: a plan request gets the trial's recorded plan, without the images the protocol requeued
    itself; any other request an empty reply (model_version -1). Responses are ignored."""

    def __init__(self, store):
        self.plans = {p["trial_id"]: p for p in store.plans()}
        self.store = store
        self.outbox: list = []

    def request(self, req: m.ModelRequest) -> None:
        if req.op != "plan" or req.trial_id not in self.plans:
            self.outbox.append(m.ModelReply(request_id=req.request_id, op=req.op, model_version=-1))
            return
        p = self.plans[req.trial_id]
        chosen = [(h, r) for h, r in zip(p["image_hashes"], p["reasons"]) if not r.startswith("requeued from trial")]
        pixels = np.stack([self.store.image(h) for h, _ in chosen]) if chosen else np.zeros((0, 1, 1, 1), np.uint8)
        self.outbox.append(
            m.ModelReply(
                request_id=req.request_id,
                op="plan",
                model_version=p["model_version"],
                trial_id=req.trial_id,
                image_hashes=[h for h, _ in chosen],
                reasons=[r for _, r in chosen],
                pixels=pixels,
            )
        )

    def update(self, upd: m.ResponsesUpdate) -> None:
        pass

    def poll(self, timeout_s: float = 0.0) -> list:
        out, self.outbox = self.outbox, []
        return out
