"""Online training of an ensemble of compact CNNs, one per (neuron, member): the model.kind = "compact" model.

Implements the online-model interface used by the model worker (see models/baseline.py):
    model = CompactOnline(cfg, n_neurons, image_shape (H, W, C))
    model.add_responses(images uint8 (n, H, W, C), counts (n, N), window_s)
    model.train(steps)            # that many optimizer steps, warm-started from the current weights
    model.version                 # increments when snapshot() is taken after training happened
    model.snapshot() -> CompactPredictor  (a frozen copy: later training does not change it)

Ensembles as hypotheses: member m of neuron n is model k = m * n_neurons + n. Members
differ by their initial weights (seeded by k) and by a bootstrap of the trials:
each stored presentation gets one Poisson(1) weight per member when it arrives
(the online bootstrap), so members disagree where the data are thin. Member 0
weights every presentation 1: it is the best single estimate.

Loss: Poisson negative log-likelihood of the counts in the response window,
predicted count = rate * window_s. Memory is bounded by the ring buffer
(cfg.max_stored_responses presentations).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from models.compact import CompactSpec, make_models
from models.config import ModelConfig
from models.data import ResponseBuffer
from models.stacked import LoopForm, StackedCompact, build_form, resolve_form


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto'. A CUDA device that is not there is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"model.device = {name!r} but torch sees no CUDA GPU on this machine "
                '(set model.device = "auto" to fall back to the CPU)'
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"model.device = {name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


def prepare_torch_for(device: torch.device, cpu_threads: int = 0) -> None:
    """Process-wide torch settings for training: the CPU thread count (0: torch's default), denormals flushed."""
    if device.type == "cpu":
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        # Tiny activations late in training become denormal floats, which make CPU arithmetic slow; flushing
        # them to zero avoids that.
        torch.set_flush_denormal(True)


def set_mean_rates(net: LoopForm | StackedCompact, rates_hz: torch.Tensor) -> None:
    """Output scale of every model from its neuron's mean rate (K,)."""
    if isinstance(net, StackedCompact):
        with torch.no_grad():
            net.rate_scale.copy_(rates_hz.clamp(min=0.1).to(net.rate_scale) / np.log(2.0))
    else:
        for m, r in zip(net.models, rates_hz.tolist()):
            m.set_mean_rate(r)


class CompactPredictor:
    """A frozen ensemble: rates (n_members, B, n_selected) in spikes/s, differentiable in the images."""

    def __init__(
        self, version: int, net: LoopForm | StackedCompact, n_neurons: int, n_members: int, device: torch.device
    ):
        self.version = version
        self.n_neurons = n_neurons
        self.n_members = n_members
        self.device = device
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._selected: dict[tuple[int, ...], StackedCompact] = {}

    def model_index(self, neurons: Sequence[int]) -> list[int]:
        return [m * self.n_neurons + n for m in range(self.n_members) for n in neurons]

    def rates(self, images: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        sel = list(range(self.n_neurons)) if neurons is None else [int(n) for n in neurons]
        x = images.to(self.device, torch.float32)
        if neurons is None:
            out = self.net(x)
        elif isinstance(self.net, StackedCompact):
            # Gradient ascent calls this many times for the same few neurons: build the
            # small stacked network once.
            key = tuple(sel)
            if key not in self._selected:
                self._selected[key] = self.net.select(self.model_index(sel)).eval()
            out = self._selected[key](x)
        else:
            out = self.net(x, self.model_index(sel))
        out = out.reshape(x.shape[0], self.n_members, len(sel)).permute(1, 0, 2)
        return out.to(images.device)


class CompactOnline:
    """The model.kind = "compact" online model (the module docstring)."""

    def __init__(self, cfg: ModelConfig, n_neurons: int, image_shape: tuple[int, int, int]):
        self.cfg = cfg
        self.n_neurons = n_neurons
        self.n_members = cfg.ensemble_size
        self.image_shape = tuple(image_shape)
        self.device = resolve_device(cfg.device)
        prepare_torch_for(self.device, cfg.cpu_threads)
        self.spec = CompactSpec.from_config(cfg, self.image_shape)
        self.form = resolve_form(cfg.form, self.device, self.spec, self.n_members * n_neurons, cfg.batch_size)
        models = make_models(self.spec, self.n_members * n_neurons, seed=cfg.seed)
        self.net = build_form(self.form, models).to(self.device)
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.use_amp = cfg.mixed_precision and self.device.type == "cuda"
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.buffer = ResponseBuffer(cfg.max_stored_responses, self.image_shape, n_neurons)
        cap = cfg.max_stored_responses
        self.window_s = np.zeros(cap, np.float32)
        self.boot_weights = np.zeros((cap, self.n_members), np.float32)
        self.rng = np.random.default_rng(cfg.seed)
        self.version = 0
        self.steps_done = 0
        self._steps_at_snapshot = 0
        self._scaled = False
        self.last_loss = float("nan")

    @property
    def n_models(self) -> int:
        return self.n_members * self.n_neurons

    def add_responses(self, images: np.ndarray, counts: np.ndarray, window_s: float) -> None:
        n = len(images)
        rows = (self.buffer.n_total + np.arange(n)) % self.buffer.capacity
        w = self.rng.poisson(1.0, (n, self.n_members)).astype(np.float32)
        w[:, 0] = 1.0
        self.boot_weights[rows] = w
        self.window_s[rows] = window_s
        self.buffer.add(images, counts, window_s)

    def _start_scale(self) -> None:
        _, rates = self.buffer.tensors()
        mean = rates.mean(0).repeat(self.n_members)  # model k = m * N + n
        set_mean_rates(self.net, mean)
        self._scaled = True

    def train(self, steps: int) -> None:
        n = len(self.buffer)
        if steps <= 0 or n < self.cfg.min_responses_to_train:
            return
        if not self._scaled:
            self._start_scale()
        self.net.train()
        member_of_model = torch.arange(self.n_models, device=self.device) // self.n_neurons
        for _ in range(steps):
            idx = self.rng.integers(0, n, min(self.cfg.batch_size, n))
            images, rates = self.buffer.tensors(idx)
            window = torch.from_numpy(self.window_s[idx]).to(self.device)[:, None]
            weights = torch.from_numpy(self.boot_weights[idx]).to(self.device)[:, member_of_model]  # (B, K)
            images = images.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            counts = (rates.to(self.device) * window).repeat(1, self.n_members)  # (B, K)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                pred = self.net(images)
            mu = pred.float() * window + 1e-6
            nll = mu - counts * torch.log(mu)
            # Per-model weighted mean, summed over models: each model's gradient is its own.
            loss = ((weights * nll).sum(0) / weights.sum(0).clamp(min=1.0)).sum()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.steps_done += 1
        # Read once per call: a float() per step would synchronise the GPU every step.
        self.last_loss = float(loss.detach()) / self.n_models
        self.net.eval()

    def snapshot(self) -> CompactPredictor:
        if self.steps_done > self._steps_at_snapshot:
            self.version += 1
            self._steps_at_snapshot = self.steps_done
        frozen = copy.deepcopy(self.net)  # one copy of the whole form: cheaper than rebuilding it model by model
        frozen.eval()
        return CompactPredictor(self.version, frozen.to(self.device), self.n_neurons, self.n_members, self.device)

    def weights_state(self) -> dict:
        """What a checkpoint keeps: the weights, the optimizer's moments and the counters (tensors and numbers
        only: torch.load(weights_only=True) reads it). The responses are not in it: they are in the session store."""
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "version": self.version,
            "steps_done": self.steps_done,
            "scaled": self._scaled,
            "form": self.form,
        }

    def load_weights_state(self, state: dict) -> None:
        if state["form"] != self.form:
            raise ValueError(f"checkpoint of the {state['form']} form, this model is {self.form}")
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.version, self.steps_done = int(state["version"]), int(state["steps_done"])
        self._steps_at_snapshot, self._scaled = self.steps_done, bool(state["scaled"])

    def _copy_models(self):
        if isinstance(self.net, StackedCompact):
            return self.net.to_models()
        return [copy.deepcopy(m) for m in self.net.models]

    def models(self):
        """Current models, k = member * n_neurons + neuron (copies)."""
        return self._copy_models()
