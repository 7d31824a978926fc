"""The model part: fits per-neuron models online from the responses and chooses the next images.

`ModelWorker` is the Model part in process; the model worker process
(transport/processes/model_worker.py) wraps the same object behind a ROUTER
socket. Requests (plan, predict, status) are answered at once into `poll()`.

How much the model trains between plans is the clock's answer
(`clock.training_budget`): on a virtual clock a fixed number of steps before
each plan, so runs are reproducible and every arm of a comparison gets the same
compute; on the wall clock a training thread steps the model continuously and
publishes a frozen snapshot every SNAPSHOT_EVERY_S, and plans are chosen from
the latest snapshot within a share of a trial, so a slow step (or a slow GPU)
never delays a plan: it only makes the model that chose it a little older.

The model is built when the first responses arrive: their width is the neuron
count, which comes from the acquisition side and nowhere else.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from contract import messages as m
from contract.images import image_hash
from contract.parts import InProcessPart
from models.factory import make_online_model
from stimulus.hypotheses import EvidenceTracker, build_hypotheses
from stimulus.images import to_unit_float
from stimulus.pools import make_pools
from stimulus.selection import ImageChooser


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def trains_while_choosing(setting: str) -> bool:
    """model.train_while_choosing: "auto" keeps training during a choice where the model process has two cores
    of its own for its two threads (torch runs one thread per calling thread), one core being left to the rig's
    other processes as in prepare_model_process: 3 or more cores. On fewer, training during a choice adds no
    steps per trial and only slows the choice: the CPU cannot do both. "always" and "never" force it."""
    if setting == "auto":
        return usable_cores() >= 3
    return setting == "always"


# A plan is due at the presenter about one trial after it is requested (queue depth 2); on the wall
# clock it is chosen within this share of a trial, so a loaded CPU costs image quality, not a late plan.
CHOOSE_WITHIN_TRIALS = 0.4


def prepare_model_process() -> None:
    """Process-wide torch settings of a model worker, the same in process and in its own process.

    One core is left to the rig's other processes (the model must never slow the presentation), and
    denormal floats are flushed (they make CPU arithmetic slow)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    with warnings.catch_warnings():  # numpy notices flushed denormals; that is the point
        warnings.simplefilter("ignore")
        torch.set_flush_denormal(True)
        np.finfo(np.float32), np.finfo(np.float64)


class BackgroundTrainer(threading.Thread):
    """Owns the model on the wall clock: new responses in through a queue, snapshots out through `latest`."""

    SNAPSHOT_EVERY_S = 1.0  # a snapshot is one copy of the weights, so this is cheap

    def __init__(self, model, window_s: float, on_snapshot=None):
        super().__init__(name="trainer", daemon=True)
        self.on_snapshot = on_snapshot  # called with each new snapshot's version, in this thread
        self.model = model
        self.window_s = window_s
        self.inbox: queue.Queue = queue.Queue()
        self.latest = model.snapshot()
        self.stop = threading.Event()
        self.may_train = threading.Event()  # cleared while a plan is chosen where the CPU cannot do both
        self.may_train.set()
        self.error: BaseException | None = None
        self._steps_at_snapshot = model.steps_done

    def run(self) -> None:
        try:
            last = time.monotonic()
            while not self.stop.is_set():
                if not self.may_train.wait(timeout=0.1):
                    continue
                got = self._take_new_responses(block=self.model.steps_done == 0)
                before = self.model.steps_done
                self.model.train(1)
                if self.model.steps_done == before and not got:
                    time.sleep(0.01)  # nothing to learn from yet
                if (
                    time.monotonic() - last >= self.SNAPSHOT_EVERY_S
                    and self.model.steps_done != self._steps_at_snapshot
                ):
                    self._steps_at_snapshot = self.model.steps_done
                    self.latest = self.model.snapshot()
                    last = time.monotonic()
                    if self.on_snapshot is not None:
                        self.on_snapshot(self.latest.version)
        except BaseException as err:  # a training failure must not kill the worker: plans go on from `latest`
            self.error = err

    def _take_new_responses(self, block: bool) -> bool:
        got = False
        try:
            while True:
                images, counts = self.inbox.get(timeout=0.05) if block and not got else self.inbox.get_nowait()
                self.model.add_responses(images, counts, self.window_s)
                got = True
        except queue.Empty:
            return got


class ModelWorker(InProcessPart):
    """The Model part in process (the module docstring says how it trains and answers)."""

    CHECKPOINT_EVERY_VERSIONS = 5
    MIN_HELD_OUT = 8  # held-out presentations the cold start's quality rule needs before it can pass

    def __init__(self, rig, clock, hypotheses=None, checkpoint_dir=None, pools=None):
        """hypotheses: a ready HypothesisSet to discriminate (a benchmark's); else the rig file's, else the
        ensemble's members. checkpoint_dir: where the weights are saved every CHECKPOINT_EVERY_VERSIONS model
        versions (`model.pt`, replaced atomically) and read back when the model is built again (a resumed
        session: the responses come back from the session store, the weights from here). pools: the rig's
        pools where they are built already (in one process)."""
        self.rig = rig
        self.clock = clock
        torch.manual_seed(rig.model.seed)
        self.image_shape = rig.images.shape
        self.window_s = (rig.response.window_end_ms - rig.response.window_start_ms) / 1000
        self.pools = pools if pools is not None else make_pools(rig.images)  # in process: the session's own
        self.chooser = ImageChooser(rig.selection, self.pools, seed=rig.selection.seed, window_s=self.window_s)
        self.fixed_hypotheses = hypotheses
        self.budget = clock.training_budget(rig.model.steps_per_trial)
        self.train_while_choosing = trains_while_choosing(rig.model.train_while_choosing)
        self.choose_s: list[float] = []  # wall seconds of each choice (the model's share of a plan)
        self.choices_past_deadline = 0
        self.steps_while_choosing = 0
        self.model = None
        self.trainer: BackgroundTrainer | None = None
        self.n_neurons: int | None = None
        self.evidence: EvidenceTracker | None = None
        self.evidence_history: list[np.ndarray] = []  # posterior after each presentation
        self._snapshot = None
        self._steps_at_snapshot = 0
        self.n_responses = 0
        self.incarnation = f"{os.getpid()}-{time.time_ns()}"
        self.plans_answered = 0
        self.outbox: list = []
        self.stopped = False
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpointed_version = -1
        self.resumed_from: int | None = None  # the checkpoint's model version, if the weights came from one
        self.model_driven_since: int | None = None  # plans answered when the cold start's rule first passed
        self.initialized_from: dict | None = None  # model.init_from: the checkpoint and which readouts it gave
        if rig.model.init_from:
            if rig.model.kind != "shared":
                raise ValueError(f"model.init_from needs model.kind 'shared', not {rig.model.kind!r}")
            self.init_checkpoint(rig.model.init_from)  # a missing checkpoint is refused before the session starts

    # -- Model part --------------------------------------------------------------------
    def request(self, req: m.ModelRequest) -> None:
        self.outbox.append(self.answer(req))

    def update(self, upd: m.ResponsesUpdate) -> None:
        self.learn(np.array(upd.pixels), np.array(upd.counts))

    def poll(self, timeout_s: float = 0.0) -> list:
        out, self.outbox = self.outbox, []
        return out

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.stop.set()
            self.trainer.join(timeout=30)
        self.stopped = True

    # -- what it does --------------------------------------------------------------------
    def _start(self, n_neurons: int) -> None:
        self.n_neurons = n_neurons
        self.model = make_online_model(self.rig.model, n_neurons, self.image_shape)
        self._load_checkpoint()
        if self.resumed_from is None and self.rig.model.init_from:
            self._start_from_previous()
        self._snapshot = self.model.snapshot()
        self._steps_at_snapshot = self.model.steps_done
        if self.budget is None:  # the clock says: train in the background, answer from snapshots
            self.trainer = BackgroundTrainer(self.model, self.window_s, on_snapshot=self.save_checkpoint)
            self.trainer.start()

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / "model.pt"

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return
        state = torch.load(path, weights_only=True)
        if state.get("n_neurons") != self.n_neurons or state.get("kind") != self.rig.model.kind:
            return  # another session's model: start afresh rather than load the wrong shapes
        self.model.load_weights_state(state["model"])
        self.resumed_from = self.model.version
        self.checkpointed_version = self.model.version

    @property
    def unit_names(self) -> list[str] | None:
        """The session's neurons by name where the rig names its units ([cortex.openephys] units: "electrode/
        sorted_id"); None where neurons are only numbered (the virtual cortex, LSL)."""
        cortex = self.rig.cortex
        units = cortex.openephys.units if cortex.source == "openephys" and cortex.openephys is not None else None
        if not units or self.n_neurons is None or len(units) != self.n_neurons:
            return None
        return [f"{e}/{u}" for e, u in units]

    @staticmethod
    def init_checkpoint(init_from: str) -> Path:
        """Where model.init_from's checkpoint is; FileNotFoundError naming the path when it is missing."""
        path = Path(init_from).expanduser() / "checkpoints" / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"model.init_from: no checkpoint {str(path)!r} (a session keeps its model there once it has trained "
                f"{ModelWorker.CHECKPOINT_EVERY_VERSIONS} model versions)"
            )
        return path

    def _start_from_previous(self) -> None:
        """model.init_from: the core (and the readouts of units of the same name) from a previous session."""
        path = self.init_checkpoint(self.rig.model.init_from)
        state = torch.load(path, weights_only=True)
        if state.get("kind") != "shared" or "best" not in state.get("model", {}):
            raise ValueError(f"model.init_from: {str(path)!r} holds a {state.get('kind')!r} model, not a shared one")
        old_names, new_names = state.get("unit_names"), self.unit_names
        kept: list[tuple[int, int]] = []
        if old_names and new_names:
            where = {name: i for i, name in enumerate(old_names)}
            kept = [(where[name], j) for j, name in enumerate(new_names) if name in where]
        self.model.start_from(state["model"]["best"], kept, repr(str(path)))
        self.initialized_from = {
            "path": str(path),
            "readouts_kept": [new_names[j] for _, j in kept] if kept else [],
            "readouts_new": len(new_names) - len(kept) if new_names else self.n_neurons,
            "units_gone": (len(old_names) - len(kept)) if old_names and new_names else None,
        }

    def save_checkpoint(self, version: int, final: bool = False) -> None:
        """The model's weights, every few versions. Called by whoever owns the model at that moment (the plan on
        a virtual clock, the training thread between its steps on the wall clock), so the weights are whole.
        final: at the end of a session whose model is no longer training, whatever the version (unless that
        version is saved already)."""
        path = self.checkpoint_path
        if path is None or self.model is None:
            return
        since = version - self.checkpointed_version
        if since < (1 if final else self.CHECKPOINT_EVERY_VERSIONS):
            return
        state = {
            "kind": self.rig.model.kind,
            "n_neurons": self.n_neurons,
            "unit_names": self.unit_names,
            "model": self.model.weights_state(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.checkpointed_version = version

    def _names(self) -> list[str]:
        if self.fixed_hypotheses is not None:
            return list(self.fixed_hypotheses.names)
        specs = self.rig.selection.hypotheses
        return [h.name for h in specs] if specs else [f"member{i}" for i in range(self.rig.model.ensemble_size)]

    def snapshot(self):
        """The newest frozen model (None before any responses)."""
        if self.model is None:
            return None
        if self.trainer is not None:
            return self.trainer.latest
        if self.model.steps_done != self._steps_at_snapshot:
            self._snapshot = self.model.snapshot()
            self._steps_at_snapshot = self.model.steps_done
        return self._snapshot

    @property
    def version(self) -> int:
        snap = self.snapshot()
        return -1 if snap is None else snap.version

    def hypotheses(self, snap):
        """What selection discriminates and evidence weighs: given ones, the rig file's, or the ensemble."""
        if self.fixed_hypotheses is not None:
            return self.fixed_hypotheses
        if self.rig.selection.hypotheses:
            n = self.n_neurons if self.n_neurons is not None else 0
            return build_hypotheses(self.rig.selection.hypotheses, n, snap)
        return snap

    def learn(self, pixels: np.ndarray, counts: np.ndarray) -> None:
        if self.model is None:
            self._start(counts.shape[1])
        if self.evidence is None:
            self.evidence = EvidenceTracker(self._names())
        target = (
            self.hypotheses(self.snapshot())
            if (self.n_responses or self.fixed_hypotheses is not None or self.rig.selection.hypotheses)
            else None
        )
        if target is not None:
            with torch.no_grad():
                pred = target.rates(torch.from_numpy(to_unit_float(pixels)).permute(0, 3, 1, 2)).numpy()
            for i in range(len(pixels)):  # presentation by presentation: the posterior after each is kept
                self.evidence_history.append(self.evidence.update(pred[:, i : i + 1], counts[i : i + 1], self.window_s))
        self.chooser.observe(pixels, counts)
        if self.trainer is not None:
            self.trainer.inbox.put((pixels, counts))
        else:
            self.model.add_responses(pixels, counts, self.window_s)
        self.n_responses += len(pixels)

    def whoami(self) -> dict:
        """Every reply names this worker (its process and start), so the controller can tell that a new one answers
        (restarted from a checkpoint, or replaced) and send it the stored responses it does not hold."""
        return {"worker": self.incarnation}

    def info(self) -> dict:
        out = {
            **self.whoami(),
            "version": self.version,
            "plans_answered": self.plans_answered,
            "responses": self.n_responses,
            "training_steps": int(self.model.steps_done) if self.model is not None else 0,
        }
        if self.trainer is not None and self.trainer.error is not None:
            out["training_error"] = repr(self.trainer.error)
        if self.choose_s:
            out["choose_s_p50"] = float(np.median(self.choose_s))
            out["choose_s_max"] = float(np.max(self.choose_s))
            out["choices_past_deadline"] = self.choices_past_deadline
        if self.trainer is not None:
            out["train_while_choosing"] = self.train_while_choosing
            out["steps_while_choosing"] = self.steps_while_choosing
        if self.resumed_from is not None:
            out["resumed_from_version"] = self.resumed_from
        if self.initialized_from is not None:
            out["initialized_from"] = self.initialized_from
        if self.rig.selection.model_driven_after is not None:
            out["model_driven_since_plan"] = self.model_driven_since
        if "mei" in self.chooser.schedule.shares:
            out["mei_hold"] = self.chooser.mei_hold()  # MEIs' observed over predicted rates (stimulus/mei_hold.py)
        out["evidence"] = self.evidence.report() if self.evidence is not None else None
        return out

    def answer(self, req: m.ModelRequest) -> m.ModelReply:
        if req.op == "plan":
            return self.plan(req)
        if req.op == "predict":
            snap = self.snapshot()
            if snap is None:
                return m.ModelReply(request_id=req.request_id, op="predict", model_version=-1, info=self.whoami())
            with torch.no_grad():
                x = torch.from_numpy(to_unit_float(req.pixels)).permute(0, 3, 1, 2)
                rates = torch.cat([snap.rates(x[i : i + 256]) for i in range(0, len(x), 256)], 1)
            return m.ModelReply(
                request_id=req.request_id,
                op="predict",
                model_version=snap.version,
                info=self.whoami(),
                rates=rates.numpy().astype(np.float32),
            )
        return m.ModelReply(request_id=req.request_id, op=req.op, model_version=self.version, info=self.info())

    def regime(self, snap):
        """(predictor the choice may use or None, why): the cold start's rule (selection.model_driven_after).
        The model-driven kinds use the snapshot only once its held-out quality (snap.quality,
        models.metrics.held_out_quality) beats both the threshold and chance on MIN_HELD_OUT presentations."""
        after = self.rig.selection.model_driven_after
        if snap is None or after is None:
            return snap, None
        if not hasattr(snap, "quality"):
            return snap, f"model-driven: model.kind {self.rig.model.kind!r} measures no held-out quality"
        q = snap.quality
        if q is None or q["n"] < self.MIN_HELD_OUT:
            n = 0 if q is None else q["n"]
            return None, f"cold start: {n} held-out presentations, needs {self.MIN_HELD_OUT}"
        figures = f"held-out r {q['r']:.3f}, chance {q['chance_r']:.3f}, threshold {after:g}, n {q['n']}"
        if q["r"] > max(after, q["chance_r"]):
            if self.model_driven_since is None:
                self.model_driven_since = self.plans_answered
            return snap, f"model-driven: {figures}"
        return None, f"cold start: {figures}"

    def plan(self, req: m.ModelRequest) -> m.ModelReply:
        if self.trainer is None and self.model is not None and req.train_steps:
            self.model.train(req.train_steps)
        snap = self.snapshot()
        deadline = self.clock.deadline_in(CHOOSE_WITHIN_TRIALS * self.rig.trial_duration_ms / 1000)
        if self.fixed_hypotheses is not None or self.rig.selection.hypotheses:
            target = self.hypotheses(snap)
            if self.evidence is not None:
                self.chooser.set_hypothesis_weights(self.evidence.posterior())
            regime = None
        else:
            target, regime = self.regime(snap if self.n_responses else None)
        pause = self.trainer is not None and not self.train_while_choosing
        if pause:
            self.trainer.may_train.clear()
        t0, steps0 = time.perf_counter(), self.model.steps_done if self.model is not None else 0
        try:
            choices = self.chooser.choose(req.trial_id, req.n_images, target, deadline, regime)
        finally:
            if pause:
                self.trainer.may_train.set()
        self.choose_s.append(time.perf_counter() - t0)
        if deadline is not None and time.perf_counter() >= deadline:
            self.choices_past_deadline += 1
        if self.trainer is not None and self.model is not None:
            self.steps_while_choosing += self.model.steps_done - steps0
        pixels = np.stack([c.pixels for c in choices]).astype(np.uint8)
        self.plans_answered += 1
        if self.trainer is None and snap is not None:
            self.save_checkpoint(snap.version)
        return m.ModelReply(
            request_id=req.request_id,
            op="plan",
            model_version=-1 if snap is None else snap.version,
            trial_id=req.trial_id,
            image_hashes=[image_hash(px) for px in pixels],
            reasons=[c.reason for c in choices],
            info=self.whoami(),
            pixels=pixels,
        )
