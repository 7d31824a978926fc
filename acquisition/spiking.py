"""From rates to spike times, on the recording system's clock.

The noise model (each piece a rig key in [cortex.spiking]; explained in docs/virtual-cortex.md): baseline
firing; per onset, from its latency, a response time course with mean one over the response, so the mean
rate over it is Population.rates' R; a gamma gain per (onset, neuron) giving the count the configured Fano
factor; slow log-gain drift (Ornstein-Uhlenbeck); units lost at a time in lost_window_s; a refractory
period whose dead-time deletion leaves the mean rate unchanged.

Spikes come from thinning a Poisson process at each neuron's maximum rate: exact in continuous time, so the
spikes do not depend on how often advance() is called.

    SpikingModel(cfg: SpikingConfig, baseline_hz (N,), seed, start_s=0.0)   # stateful; time only moves forward
    .add_onset(onset_s, rates_hz (N,), duration_s=None)   # an image appeared at onset_s (acquisition clock)
    .advance(t_end_s) -> (neuron uint16, time_s float64), spikes in [previous t_end, t_end), time-sorted
Ground truth: .latency_s (N,), .lost_at_s (N,) (inf: never lost),
.expected_counts(rates, window_start_s, window_end_s) and .count_variance(...) for one isolated onset.
"""

from __future__ import annotations

import numpy as np

from acquisition.config import SpikingConfig

MAX_STEP_S = 5.0  # long advances are cut into steps of at most this, to bound memory


class ResponseProfile:
    """The response time course k(u), u = time since response start, and its integral."""

    def __init__(self, cfg: SpikingConfig):
        self.rise = cfg.rise_ms / 1000.0
        self.tau = cfg.transient_tau_ms / 1000.0
        self.extra = cfg.transient_ratio - 1.0

    def _raw_integral(self, u: np.ndarray, overshoot: float) -> np.ndarray:
        """Integral of (1 - e^{-v/rise}) (1 + overshoot e^{-v/tau}) dv from 0 to u (u >= 0)."""
        r, t = self.rise, self.tau
        both = 1.0 / (1.0 / r + 1.0 / t)
        return (
            u
            - r * (1 - np.exp(-u / r))
            + overshoot * t * (1 - np.exp(-u / t))
            - overshoot * both * (1 - np.exp(-u / both))
        )

    def shape(self, u: np.ndarray, duration: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """k(u) for 0 <= u < duration (zero elsewhere), mean one over the response."""
        over = np.where(positive, self.extra, 0.0)
        uc = np.clip(u, 0.0, None)
        raw = (1 - np.exp(-uc / self.rise)) * (1 + over * np.exp(-uc / self.tau))
        norm = self._raw_integral(duration, over) / duration
        return np.where((u >= 0) & (u < duration), raw / norm, 0.0)

    def integral(self, u: np.ndarray, duration: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """Integral of k from 0 to u (clipped to the response)."""
        over = np.where(positive, self.extra, 0.0)
        uc = np.clip(u, 0.0, duration)
        return self._raw_integral(uc, over) / (self._raw_integral(duration, over) / duration)

    def max_shape(self, duration: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """An upper bound of k over the response."""
        over = np.where(positive, self.extra, 0.0)
        return (1 + over) / (self._raw_integral(duration, over) / duration)


def refractory_rate(rate: np.ndarray, refractory_s: float) -> np.ndarray:
    """lambda' with lambda' exp(-lambda' tau) = lambda: the rate before dead-time deletion."""
    if refractory_s <= 0:
        return rate
    cap = 1.0 / refractory_s  # lambda' tau <= 1: beyond, dead time cannot deliver the rate
    lam = np.minimum(rate, cap)
    target = np.minimum(rate, cap * np.exp(-1.0))
    for _ in range(20):
        lam = np.minimum(target * np.exp(lam * refractory_s), cap)
    return lam


class SpikingModel:
    def __init__(self, cfg: SpikingConfig, baseline_hz: np.ndarray, seed: int, start_s: float = 0.0):
        self.cfg = cfg
        self.baseline = np.asarray(baseline_hz, np.float64)
        self.n = len(self.baseline)
        self.rng = np.random.default_rng(seed)
        self.latency_s = self.rng.uniform(*cfg.latency_ms, self.n) / 1000.0
        self.profile = ResponseProfile(cfg)
        self.refractory_s = cfg.refractory_ms / 1000.0
        self.t = float(start_s)
        self.lost_at_s = np.full(self.n, np.inf)
        n_lost = min(cfg.n_lost_neurons, self.n)
        if n_lost:
            who = self.rng.choice(self.n, n_lost, replace=False)
            self.lost_at_s[who] = start_s + self.rng.uniform(*cfg.lost_window_s, n_lost)
        # Slow drift of log gain: starts from its stationary distribution.
        self.log_gain = self.rng.normal(0.0, cfg.gain_drift_sd, self.n) if cfg.gain_drift_sd > 0 else np.zeros(self.n)
        self._drift_t = float(start_s)
        self._last_event = np.full(self.n, -np.inf)  # last event of the underlying process, per neuron
        # Live onsets: time, duration, rate change (R - baseline) and gain, per neuron.
        self._on_t = np.zeros(0)
        self._on_dur = np.zeros(0)
        self._on_delta = np.zeros((0, self.n))
        self._on_gain = np.zeros((0, self.n))

    # ------------------------------------------------------------------ onsets

    def _drift_to(self, t: float) -> np.ndarray:
        if self.cfg.gain_drift_sd > 0:
            dt = max(0.0, t - self._drift_t)
            rho = np.exp(-dt / self.cfg.gain_drift_timescale_s)
            self.log_gain = rho * self.log_gain + np.sqrt(1 - rho**2) * self.cfg.gain_drift_sd * self.rng.normal(
                size=self.n
            )
            self._drift_t = max(self._drift_t, t)
        return np.exp(self.log_gain)

    def spiking_fano(self, rates_hz: np.ndarray, duration_s: float) -> np.ndarray:
        """Fano factor of the count over a response without gain noise.

        Dead time makes spiking more regular than Poisson: a process of rate l with
        dead time tau has Fano factor about (1 - l tau)^2; averaged over the time course.
        """
        rates = np.maximum(np.asarray(rates_hz, np.float64), 0.0)
        if self.refractory_s <= 0:
            return np.ones_like(rates)
        u = (np.arange(64) + 0.5) / 64 * duration_s
        k = self.profile.shape(u[None, :], duration_s, (rates > self.baseline)[..., None])  # (..., 64)
        lam = rates[..., None] * k
        return np.clip((k * (1 - np.minimum(lam * self.refractory_s, 1.0)) ** 2).mean(-1), 0.0, 1.0)

    def gain_variance(self, rates_hz: np.ndarray, duration_s: float) -> np.ndarray:
        """Variance of the trial gain that gives the count over the response the configured Fano factor."""
        mu = np.maximum(rates_hz, 0.0) * duration_s
        need = self.cfg.fano_factor - self.spiking_fano(rates_hz, duration_s)
        return np.where(mu > 0, np.maximum(need, 0.0) / np.maximum(mu, 1e-12), 0.0)

    def trial_gain(self, rates_hz: np.ndarray, duration_s: float) -> np.ndarray:
        """Gamma gain per neuron, mean one (gamma-Poisson overdispersion)."""
        var = self.gain_variance(rates_hz, duration_s)
        shape = np.where(var > 0, 1.0 / np.maximum(var, 1e-12), 1.0)
        g = self.rng.gamma(np.maximum(shape, 1e-3), 1.0 / np.maximum(shape, 1e-3))
        return np.where(var > 0, g, 1.0)

    def add_onset(self, onset_s: float, rates_hz: np.ndarray, duration_s: float | None = None) -> None:
        rates = np.asarray(rates_hz, np.float64)
        if rates.shape != (self.n,):
            raise ValueError(f"rates_hz must have shape ({self.n},), got {rates.shape}")
        dur = self.cfg.response_duration_ms / 1000.0 if duration_s is None else float(duration_s)
        gain = self.trial_gain(rates, dur) * self._drift_to(onset_s)
        self._on_t = np.append(self._on_t, float(onset_s))
        self._on_dur = np.append(self._on_dur, dur)
        self._on_delta = np.vstack([self._on_delta, (rates - self.baseline)[None]])
        self._on_gain = np.vstack([self._on_gain, gain[None]])

    # ------------------------------------------------------------------ rates

    def _rate_at(self, who: np.ndarray, t: np.ndarray) -> np.ndarray:
        """True rate of neurons `who` at times `t` (arrays of the same length)."""
        rate = self.baseline[who].copy()
        for m in range(len(self._on_t)):
            u = t - self._on_t[m] - self.latency_s[who]
            delta = self._on_delta[m, who]
            gain = self._on_gain[m, who]
            dur = self._on_dur[m]
            inside = (u >= 0) & (u < dur)
            k = self.profile.shape(u, dur, delta > 0)
            rate += inside * (gain - 1) * self.baseline[who] + gain * delta * k
        rate = np.maximum(rate, 0.0)
        return np.where(t >= self.lost_at_s[who], 0.0, rate)

    def _max_rate(self, t0: float, t1: float) -> np.ndarray:
        """An upper bound on each neuron's rate over [t0, t1)."""
        bound = self.baseline.copy()
        for m in range(len(self._on_t)):
            start = self._on_t[m] + self.latency_s
            live = (start < t1) & (start + self._on_dur[m] > t0)
            delta, gain = self._on_delta[m], self._on_gain[m]
            kmax = self.profile.max_shape(self._on_dur[m], delta > 0)
            bound += live * (np.abs(gain - 1) * self.baseline + gain * np.abs(delta) * kmax)
        return bound

    # ------------------------------------------------------------------ spikes

    def advance(self, t_end_s: float) -> tuple[np.ndarray, np.ndarray]:
        neurons, times = [], []
        while self.t < t_end_s:
            t1 = min(float(t_end_s), self.t + MAX_STEP_S)
            nrn, tim = self._step(self.t, t1)
            neurons.append(nrn)
            times.append(tim)
            self.t = t1
            self._drop_finished(t1)
        if not neurons:
            return np.zeros(0, np.uint16), np.zeros(0)
        return np.concatenate(neurons).astype(np.uint16), np.concatenate(times)

    def _step(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        lam_max = refractory_rate(self._max_rate(t0, t1), self.refractory_s)
        lam_max = np.where(self.lost_at_s <= t0, 0.0, lam_max)
        counts = self.rng.poisson(lam_max * (t1 - t0))
        who = np.repeat(np.arange(self.n), counts)
        t = self.rng.uniform(t0, t1, len(who))
        # Thinning: keep a candidate with probability (true rate) / (bound), both before dead time.
        lam = refractory_rate(self._rate_at(who, t), self.refractory_s)
        keep = self.rng.random(len(who)) * lam_max[who] < lam
        who, t = who[keep], t[keep]
        # Dead time: sort by neuron then time; delete events within tau of the previous event.
        order = np.lexsort((t, who))
        who, t = who[order], t[order]
        if self.refractory_s > 0 and len(t):
            prev = np.empty_like(t)
            prev[1:] = t[:-1]
            first = np.ones(len(t), bool)
            first[1:] = who[1:] != who[:-1]
            prev[first] = self._last_event[who[first]]
            last = np.ones(len(t), bool)
            last[:-1] = who[1:] != who[:-1]
            self._last_event[who[last]] = t[last]
            ok = t - prev >= self.refractory_s
            who, t = who[ok], t[ok]
        order = np.argsort(t, kind="stable")
        return who[order], t[order]

    def _drop_finished(self, t: float) -> None:
        if len(self._on_t):
            live = self._on_t + self.latency_s.max() + self._on_dur > t
            self._on_t, self._on_dur = self._on_t[live], self._on_dur[live]
            self._on_delta, self._on_gain = self._on_delta[live], self._on_gain[live]

    # ------------------------------------------------------------------ ground truth

    def _window_parts(self, rates_hz, window_start_s, window_end_s, duration_s):
        rates = np.atleast_2d(np.asarray(rates_hz, np.float64))
        dur = self.cfg.response_duration_ms / 1000.0 if duration_s is None else float(duration_s)
        delta = rates - self.baseline
        a = window_start_s - self.latency_s
        b = window_end_s - self.latency_s
        pos = delta > 0
        evoked = delta * (self.profile.integral(b, dur, pos) - self.profile.integral(a, dur, pos))
        overlap = np.clip(np.minimum(b, dur) - np.maximum(a, 0.0), 0.0, None)  # window inside the response
        gain_affected = self.baseline * overlap + evoked
        mean = self.baseline * (window_end_s - window_start_s) + evoked
        return rates, dur, np.maximum(mean, 0.0), np.maximum(gain_affected, 0.0)

    def expected_counts(
        self, rates_hz: np.ndarray, window_start_s: float, window_end_s: float, duration_s: float | None = None
    ) -> np.ndarray:
        """(B, N) expected spike count in [onset + start, onset + end) for one isolated onset (no drift)."""
        return self._window_parts(rates_hz, window_start_s, window_end_s, duration_s)[2]

    def count_variance(
        self, rates_hz: np.ndarray, window_start_s: float, window_end_s: float, duration_s: float | None = None
    ) -> np.ndarray:
        """(B, N) variance of that count: spiking (Poisson with dead time) plus the gamma gain."""
        rates, dur, mean, affected = self._window_parts(rates_hz, window_start_s, window_end_s, duration_s)
        return self.spiking_fano(rates, dur) * mean + self.gain_variance(rates, dur) * affected**2
