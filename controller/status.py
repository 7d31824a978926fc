"""Live status of a running session, for the people watching the rig.

The engine calls `tick(engine)` from its message loop; the board redraws at most
`every_s` (a few times a second), from counters the engine keeps anyway, so the
loop is not slowed. On a terminal it is a live panel (rich); otherwise (a log
file, a pipe) one plain line every `plain_every_s`. A plan that falls back to
pool images prints a warning line at once: the loop is falling behind, and the
images shown are no longer the model's choice.

Held-out accuracy so far is asked of the model every `accuracy_every_trials`
completed trials (one predict request on the held-out images, answered between
trials like any other request) where the true rates are known (the simulated rig).
What the board learns is also kept in the session log (kinds "heldout" and
"evidence"), so the report can draw it over trials.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from controller.session import heldout_r
from records.summary import percentile


class StatusBoard:
    """The live panel (or plain lines) of one session; `tick(engine)` from the message loop, `close()` at the end."""

    def __init__(
        self,
        n_trials: int,
        truth=None,
        stream=None,
        every_s: float = 0.25,
        plain_every_s: float = 5.0,
        accuracy_every_trials: int = 10,
        status_every_s: float = 2.0,
        log_file=None,
    ):
        """log_file: also write the plain lines and warnings here (the session's logs/controller.log)."""
        self.log_file = log_file
        self.n_trials = n_trials
        self.truth = truth
        self.true_test: np.ndarray | None = None
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self.plain_every_s = plain_every_s
        self.accuracy_every_trials = accuracy_every_trials
        self.status_every_s = status_every_s
        self.live = None
        self.console = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self.console = Console(file=self.stream)
            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        self.t0 = time.monotonic()
        self.last_draw = -np.inf
        self.last_plain = time.monotonic()
        self.late_seen = 0
        self.misshown_seen = 0
        self.silent_seen = 0
        self.accuracy: float | None = None
        self.accuracy_trials = 0
        self.pending_predict: int | None = None
        self.pending_status: int | None = None
        self.last_status_ask = -np.inf
        self.model_info: dict = {}
        self.steps_at: list[tuple[int, int]] = []  # (completed trials, training steps) when status came

    # -- asking the model, without waiting -----------------------------------------------
    def _ask(self, engine, completed: int) -> None:
        now = time.monotonic()
        if self.pending_status is None and now - self.last_status_ask >= self.status_every_s:
            self.pending_status = engine._model_request("status")
            self.last_status_ask = now
        if (
            self.truth is not None
            and self.pending_predict is None
            and completed
            and completed - self.accuracy_trials >= self.accuracy_every_trials
        ):
            self.pending_predict = engine._model_request("predict", pixels=engine.pools.test)
            self.accuracy_trials = completed
        if self.pending_status is not None and -self.pending_status in engine.model_replies:
            self.model_info = engine.model_replies.pop(-self.pending_status).info
            self.steps_at.append((completed, int(self.model_info.get("training_steps", 0))))
            self.pending_status = None
            ev = self.model_info.get("evidence")
            if ev and ev.get("presentations") and ev.get("posterior"):  # kept: the report draws it over trials
                engine.store.log(
                    "evidence",
                    json.dumps(
                        {
                            "trials_done": completed,
                            "presentations": ev["presentations"],
                            "posterior": ev["posterior"],
                            "version": self.model_info.get("version"),
                        }
                    ),
                )
        if self.pending_predict is not None and -self.pending_predict in engine.model_replies:
            reply = engine.model_replies.pop(-self.pending_predict)
            if reply.rates.size:
                if self.true_test is None:  # the truth of the held-out images never changes: computed once
                    self.true_test = self.truth(engine.pools.test)
                r = heldout_r(reply.rates, self.true_test)
                self.accuracy = float(np.median(r))
                engine.store.log(
                    "heldout",
                    json.dumps(
                        {
                            "trials_done": self.accuracy_trials,
                            "median_r": self.accuracy,
                            "per_neuron": [round(float(v), 4) for v in r],
                            "version": int(reply.model_version),
                        }
                    ),
                )
            self.pending_predict = None

    def steps_per_trial(self) -> float | None:
        if len(self.steps_at) < 2 or self.steps_at[-1][0] == self.steps_at[0][0]:
            return None
        (t0, s0), (t1, s1) = self.steps_at[0], self.steps_at[-1]
        return (s1 - s0) / (t1 - t0)

    # -- drawing ------------------------------------------------------------------------------
    def figures(self, engine) -> dict:
        done = sum(1 for r in engine.trial_reports.values() if r.status == "done")
        aborted = len(engine.trial_reports) - done
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        plans = engine.plans_on_time + engine.plans_late
        lat = sorted(engine.latencies_s[-200:])
        return {
            "trials": f"{done}/{self.n_trials} done, {aborted} aborted",
            "spikes/s": ", ".join(f"{name} {st.received_spikes / elapsed:,.0f}" for name, st in engine.streams.items())
            or "none yet",
            "spikes lost": sum(st.lost_spikes for st in engine.streams.values()),
            # The summary's interpolated percentiles: with few latencies an index rule can put "p50" above "p99".
            "loop latency p50/p99": (
                f"{percentile(lat, 50) * 1000:.0f} / {percentile(lat, 99) * 1000:.0f} ms" if lat else "n/a"
            ),
            "plans on time": f"{engine.plans_on_time}/{plans}"
            + (f" ({engine.plans_late} from the pool)" if engine.plans_late else ""),
            "model version": self.model_info.get("version", engine.model_version_seen),
            "training steps": self.model_info.get("training_steps", "n/a"),
            "steps per trial": "n/a" if self.steps_per_trial() is None else f"{self.steps_per_trial():.1f}",
            "held-out median r": "n/a"
            if self.accuracy is None
            else f"{self.accuracy:.3f} (after {self.accuracy_trials} trials)",
            "dropped frames": engine.dropped_frames,
            **mei_hold_figure(self.model_info),
        }

    def tick(self, engine) -> None:
        now = time.monotonic()
        if now - self.last_draw < self.every_s:
            return
        self.last_draw = now
        completed = sum(1 for r in engine.trial_reports.values() if r.status == "done")
        self._ask(engine, completed)
        if engine.plans_late > self.late_seen:
            self.late_seen = engine.plans_late
            self._line(
                f"WARNING: plan for a trial was late; pool images shown instead ({engine.plans_late} so far): "
                f"the model is falling behind"
            )
        if engine.misshown_images > self.misshown_seen:
            self.misshown_seen = engine.misshown_images
            self._line(
                f"WARNING: an image was not shown as planned ({engine.last_fault}); its response is stored "
                f"invalid and the image shown again ({engine.misshown_images} so far): check the display and the "
                f"presenter's machine"
            )
        if engine.silent_windows > self.silent_seen:
            self.silent_seen = engine.silent_windows
            self._line(
                f"WARNING: the recording stream was silent over a response window ({engine.last_silence}); its "
                f"response is stored invalid and the image shown again ({engine.silent_windows} so far): check the "
                f"recording system"
            )
        fig = self.figures(engine)
        if self.live is not None:
            from rich.table import Table

            table = Table(title="cortexloop session", show_header=False, box=None)
            for k, v in fig.items():
                table.add_row(k, str(v))
            self.live.update(table)
            self.live.refresh()
        if now - self.last_plain >= self.plain_every_s:
            self.last_plain = now
            line = "status: " + "; ".join(f"{k} {v}" for k, v in fig.items())
            if self.live is None:
                self._line(line)
            elif self.log_file is not None:
                print(f"{time.strftime('%H:%M:%S')} {line}", file=self.log_file, flush=True)

    def warn(self, text: str) -> None:
        """A warning line at once (the live panel, or the plain lines, and the log file)."""
        self._line(f"WARNING: {text}")

    def _line(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text)
        else:
            print(text, file=self.stream, flush=True)
        if self.log_file is not None:
            print(f"{time.strftime('%H:%M:%S')} {text}", file=self.log_file, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def mei_hold_figure(model_info: dict) -> dict:
    """The live status's MEI line, where the mix holds MEIs: their median observed/predicted rate over neurons
    (stimulus/mei_hold.py) and how many neurons get cautious MEIs."""
    hold = model_info.get("mei_hold")
    if not hold:
        return {}
    per = hold.get("per_neuron") or {}
    if hold.get("median_ratio") is None:
        return {"MEI observed/predicted": "n/a (no MEI response yet)"}
    cautious = sum(1 for v in per.values() if v.get("caution"))
    return {
        "MEI observed/predicted": f"median {hold['median_ratio']:.2f} over {len(per)} neurons"
        + (f", {cautious} with cautious MEIs" if cautious else "")
    }
