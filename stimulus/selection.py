"""Choosing the next images: `ImageChooser.choose(trial_id, n_images, predictor | None, deadline_s | None)`
-> list[Choice], for the model worker.

deadline_s is a time.perf_counter() value by which the answer is due; None means no deadline, and then only
the config's step budgets count, so runs on a virtual clock are reproducible.

Each trial's slots are split among the kinds of the block mix (stimulus/mix.py): random natural images, the
pool images the objective scores highest, synthesized images, MEI checks and repeats of a fixed set. Kinds
that need a model fall back to random images until a predictor exists, and say so; every Choice says why it
was chosen. Scored images are picked best first, skipping any too close (in model features or thumbnails,
`diversity`) to one already chosen in this block. Synthesized images and MEIs stay within the natural pool's
mean level and RMS contrast (`contrast_bound`). The "epig" reference set is natural pool images, never the
held-out test set. What each kind and setting does: docs/image-selection.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stimulus.evolution import Archive, breed, choose_parents, pixels_key, target_weights
from stimulus.mei_hold import MIN_PRESENTATIONS, caution, cautious_settings, median_ratio, summarize
from stimulus.mix import MixSchedule
from stimulus.objectives import discrimination_score, population_score
from stimulus.pools import Pools
from stimulus.selection_config import SelectionConfig
from stimulus.synthesis import (
    Jitter,
    NaturalRange,
    best_pool_images,
    from_pixels,
    most_exciting_images,
    noise_images,
    synthesize,
    to_pixels,
)


@dataclass
class Choice:
    """One chosen image and why it was chosen."""

    pixels: np.ndarray  # (H, W, C) uint8
    reason: str  # e.g. "random pool#123", "js 0.41 pool#88", "synthesized js 0.8 neurons[3,7] from pool#12"


def thumbnails(images: np.ndarray, side: int = 8) -> np.ndarray:
    """uint8 (n, H, W, C) -> (n, side*side*C) float32 in [0, 1]: what near-duplicate checks compare."""
    x = from_pixels(images)
    return F.adaptive_avg_pool2d(x, side).flatten(1).numpy()


def rms_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS difference between each row of a (n, D) and each row of b (m, D) -> (n, m)."""
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0) / a.shape[1])


def pick_diverse(
    scores: np.ndarray, thumbs: np.ndarray, k: int, min_distance: float, avoid: np.ndarray | None = None
) -> list[int]:
    """Greedy best-first: up to k row indices of `scores`, none closer than min_distance to another pick
    or to `avoid` (thumbnails already shown). If too few qualify, the best of the rest fill up."""
    order = np.argsort(-scores, kind="stable")
    nearest = np.full(len(scores), np.inf)
    if avoid is not None and len(avoid):
        nearest = rms_distance(thumbs, avoid).min(1)
    picks: list[int] = []
    for j in order:
        if len(picks) == k:
            break
        if nearest[j] >= min_distance:
            picks.append(int(j))
            nearest = np.minimum(nearest, rms_distance(thumbs, thumbs[j : j + 1])[:, 0])
    taken = set(picks)
    rest = [int(j) for j in order if int(j) not in taken]
    return picks + rest[: k - len(picks)]


def standardized(features: np.ndarray) -> np.ndarray:
    """(n, D) -> (n, D): each dimension centred and scaled to unit variance over the n rows, divided by sqrt(2),
    so the RMS distance (rms_distance) between two unrelated rows is about 1 whatever the features' units.
    Dimensions that do not vary are left at zero."""
    f = np.asarray(features, np.float64)
    mean, sd = f.mean(0), f.std(0)
    # "Does not vary": relative to the dimension's size, so float32 rounding (a rate of 20.000001 Hz) is not
    # blown up into a unit of distance.
    varies = sd > 1e-5 * np.maximum(1.0, np.abs(mean))
    return np.where(varies, (f - mean) / np.where(varies, sd, 1.0), 0.0) / np.sqrt(2.0)


def model_features(predictor, images: torch.Tensor) -> torch.Tensor:
    """What diversity is measured on: the predictor's own `features(images) -> (B, D)` where it has one (a
    shared core's representation), else the members' mean predicted rates (B, N)."""
    feats = getattr(predictor, "features", None)
    if callable(feats):
        out = feats(images)
        if out.ndim != 2 or out.shape[0] != images.shape[0]:
            raise ValueError(f"predictor.features returned shape {tuple(out.shape)}, expected ({images.shape[0]}, D)")
        return out
    return predictor.rates(images).mean(0)


def pool_indices(kinds, candidates_from: str) -> np.ndarray:
    """Indices of the pool images `candidates_from` ("natural", "gaudy", "both") allows; a clear error if none."""
    kinds = np.asarray(kinds)
    if candidates_from == "both":
        idx = np.arange(len(kinds))
    elif candidates_from in ("natural", "gaudy"):
        idx = np.flatnonzero(kinds == candidates_from)
    else:
        raise ValueError(f"selection.candidates_from = {candidates_from!r}: expected 'natural', 'gaudy' or 'both'")
    if len(idx) == 0:
        have = sorted(set(kinds.tolist()))
        raise ValueError(
            f"selection.candidates_from = {candidates_from!r}, but the training pool has no such images "
            f"(it holds {have or 'none'}; gaudy images come from images.gaudy_share)"
        )
    return idx


def natural_indices(kinds) -> np.ndarray:
    """The natural images of the pool; a pool with none (a lab's own set, all one kind) counts as natural whole."""
    kinds = np.asarray(kinds)
    return np.flatnonzero(kinds == "natural") if (kinds == "natural").any() else np.arange(len(kinds))


def random_pool_indices(kinds, random_from: str) -> np.ndarray:
    """The pool images a `random` slot draws from (selection.random_from), and a late plan's fallback too."""
    return natural_indices(kinds) if random_from == "natural" else pool_indices(kinds, random_from)


class ImageChooser:
    """The model worker's image chooser (the module docstring says how it chooses)."""

    EVOLVE_WEIGHT_IMAGES = 256  # latest images shown on which the evolved kind weighs the model's accuracy

    def __init__(self, cfg: SelectionConfig, pools: Pools, seed: int = 0, window_s: float = 0.15):
        """window_s: length of the response window the counts are taken in (the rig file's [response],
        passed by the model worker; the count divergences assume it)."""
        self.cfg = cfg
        self.pools = pools
        self.rng = np.random.default_rng([seed, cfg.seed])
        # Random images' own stream and their walks along it (_random): per source, [order, position].
        self.random_rng = np.random.default_rng([seed, cfg.seed, 3])
        self._random_walks: dict[bytes, list] = {}
        self.schedule = MixSchedule(cfg.shares(), cfg.block_trials)
        self.image_shape = tuple(pools.train.shape[1:])
        self.window_s = float(window_s)
        self.thumbs = thumbnails(pools.train)
        kinds = np.asarray(pools.train_kind)
        self.natural = natural_indices(kinds)
        self.candidate_pool = pool_indices(kinds, cfg.candidates_from)
        self.random_pool = random_pool_indices(kinds, cfg.random_from)
        # The images whose responses "epig" asks to predict better: natural pool images, fixed for the session
        # (their own seed stream). The held-out test set is never looked at, so accuracy measured on it stays
        # honest.
        ref_rng = np.random.default_rng([seed, cfg.seed, 2])
        self.reference = np.sort(
            ref_rng.choice(self.natural, min(cfg.reference_size, len(self.natural)), replace=False)
        )
        self._reference_rates: tuple | None = None  # (predictor version, id, rates (M, R, N)) of the last predictor
        self.natural_range = (
            NaturalRange.of(pools.train[self.natural], cfg.contrast_percentiles)
            if cfg.contrast_bound == "natural"
            else None
        )
        # The repeat set is fixed for the whole session (its own seed stream, so mixes do not change it).
        set_rng = np.random.default_rng([seed, cfg.seed, 1])
        self.repeat_set = set_rng.choice(self.natural, min(cfg.repeat_set_size, len(self.natural)), replace=False)
        self._repeat_cursor = 0
        self._mei_cursor = 0
        self._block = None
        self._shown_idx: set[int] = set()
        self._shown_thumbs: list[np.ndarray] = []
        self._shown_pixels: list[np.ndarray] = []  # this block's images: model-space diversity embeds them afresh
        # Current posterior over the predictor's members, for the "js" objective (None: equal weights).
        self.hypothesis_weights: np.ndarray | None = None
        # The "evolved" kind's record of what was shown and how each neuron responded (stimulus/evolution.py).
        self.archive = Archive(self.window_s) if "evolved" in self.schedule.shares else None
        self._evolved_made = 0
        self._evolve_weights: tuple | None = None  # (key, per-neuron weights) of the last evolved slot
        # MEIs made (content key -> (neuron, predicted Hz)) and, per neuron, [observed Hz sum, predicted Hz sum, n]
        # of their presentations: whether they hold (stimulus/mei_hold.py).
        self._mei_made: dict[str, tuple[int, float]] = {}
        self._mei_seen: dict[int, list] = {}
        # mei_start "recorded": per neuron, the shown image with its highest recorded rate, and its rates' sum and
        # count (an image is a start only where it drew more than the neuron's mean).
        self._recorded: dict | None = None

    # ------------------------------------------------------------------ public

    def observe(self, pixels: np.ndarray, counts: np.ndarray) -> None:
        """Recorded responses: pixels (n, H, W, C) uint8 and their counts (n, N); what the "evolved" kind breeds
        from (kept only when the mix has it)."""
        if self.archive is not None:
            self.archive.observe(pixels, counts)
        if self.cfg.mei_start == "recorded" and "mei" in self.schedule.shares:
            self._observe_recorded(np.asarray(pixels), np.asarray(counts, np.float64) / self.window_s)
        if self._mei_made:
            for px, c in zip(np.asarray(pixels), np.asarray(counts, np.float64)):
                made = self._mei_made.get(pixels_key(px))
                if made is not None:
                    row = self._mei_seen.setdefault(made[0], [0.0, 0.0, 0])
                    row[0] += float(c[made[0]]) / self.window_s
                    row[1] += made[1]
                    row[2] += 1

    def _observe_recorded(self, pixels: np.ndarray, rates: np.ndarray) -> None:
        if self._recorded is None:
            n = rates.shape[1]
            self._recorded = {
                "best_hz": np.full(n, -np.inf),
                "pixels": np.zeros((n, *pixels.shape[1:]), np.uint8),
                "sum_hz": np.zeros(n),
                "n": 0,
            }
        rec = self._recorded
        top = rates.argmax(0)  # per neuron, the strongest of this batch
        better = rates[top, np.arange(rates.shape[1])] > rec["best_hz"]
        for j in np.flatnonzero(better):
            rec["best_hz"][j] = rates[top[j], j]
            rec["pixels"][j] = pixels[top[j]]
        rec["sum_hz"] += rates.sum(0)
        rec["n"] += len(rates)

    def _recorded_start(self, j: int) -> tuple[np.ndarray, float] | None:
        """(pixels, recorded Hz) of the shown image neuron j answered most strongly, where that beat its mean."""
        rec = self._recorded
        if rec is None or j >= len(rec["best_hz"]) or rec["n"] == 0:
            return None
        if rec["best_hz"][j] <= rec["sum_hz"][j] / rec["n"]:
            return None
        return rec["pixels"][j], float(rec["best_hz"][j])

    def _mei_caution(self, j: int, seen: dict, pooled: dict | None) -> tuple[int, str]:
        """A neuron's caution level and why: from its own MEIs once it has MIN_PRESENTATIONS of them, else from
        all neurons' MEIs together (a neuron's first MEI is as cautious as the population's MEIs have earned)."""
        level = self.cfg.mei_hold_below
        own = seen.get(j)
        if own is not None and own["presentations"] >= MIN_PRESENTATIONS:
            k = caution(own, level)
            return k, f"observed/predicted {own['ratio']:.2f} < {level:g}" if k else ""
        k = caution(pooled, level)
        return k, f"all neurons' MEIs observed/predicted {pooled['ratio']:.2f} < {level:g}" if k else ""

    def mei_hold(self) -> dict:
        """Per neuron, its MEIs' observed over predicted rates (stimulus/mei_hold.py) and its caution level now;
        and the median ratio over neurons."""
        per = {j: summarize(*row) for j, row in sorted(self._mei_seen.items())}
        for j, entry in per.items():
            entry["caution"] = caution(entry, self.cfg.mei_hold_below)
            if not np.isfinite(entry["ratio"]):
                entry["ratio"] = None
        return {"median_ratio": median_ratio(per), "per_neuron": per, "hold_below": self.cfg.mei_hold_below}

    def set_hypothesis_weights(self, weights) -> None:
        """Weigh members by the current posterior: images then target the hypotheses still in play."""
        self.hypothesis_weights = None if weights is None else np.asarray(weights, np.float64)

    def choose(
        self, trial_id: int, n_images: int, predictor=None, deadline_s: float | None = None, regime: str | None = None
    ) -> list[Choice]:
        """regime: why the model-driven kinds are (predictor given) or are not (predictor None) chosen by the model,
        e.g. the cold start's measured quality; appended to those kinds' reasons."""
        block = self.schedule.block_of(trial_id)
        if block != self._block:
            self._block, self._shown_idx, self._shown_thumbs, self._shown_pixels = block, set(), [], []
        kinds = self.schedule.kinds_for(trial_id, n_images)
        if predictor is None:
            kinds = [k if k in ("random", "repeat", "evolved") else "random-nomodel" for k in kinds]
        want = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
        made: dict[str, list[Choice]] = {}
        # Cheap kinds first, so a deadline can only cut short the kinds that need a model.
        for kind in ("repeat", "random", "random-nomodel", "evolved", "selected", "synthesized", "mei"):
            if kind in want:
                made[kind] = self._make(kind, want[kind], predictor, deadline_s)
        out = [made[k].pop(0) for k in kinds]
        if regime:
            for c, k in zip(out, kinds):
                if k == "random-nomodel":
                    c.reason = c.reason.replace("(no model yet)", f"({regime})")
                elif k in ("selected", "synthesized", "mei", "evolved"):
                    c.reason = f"{c.reason} [{regime}]"
        self._shown_thumbs.extend(thumbnails(np.stack([c.pixels for c in out])))
        self._shown_pixels.extend(c.pixels for c in out)
        return out

    # ------------------------------------------------------------------ kinds

    def _make(self, kind: str, n: int, predictor, deadline_s: float | None) -> list[Choice]:
        if kind == "repeat":
            return self._repeats(n)
        if kind == "random":
            return [Choice(self.pools.train[i], f"random pool#{i}") for i in self._random(n, self.random_pool)]
        # A kind that needs a model and has none (or no time left): random images from its own candidates.
        if kind == "random-nomodel":
            return [
                Choice(self.pools.train[i], f"random pool#{i} (no model yet)")
                for i in self._random(n, self.candidate_pool)
            ]
        if kind == "evolved":  # needs recorded responses, not a model: the model only screens, time permitting
            return [self._evolved_one(predictor, deadline_s) for _ in range(n)]
        if deadline_s is not None and time.perf_counter() >= deadline_s:
            return [
                Choice(self.pools.train[i], f"random pool#{i} (past deadline)")
                for i in self._random(n, self.candidate_pool)
            ]
        if kind == "selected":
            return self._selected(n, predictor, deadline_s)
        if kind == "synthesized":
            return self._synthesized(n, predictor, deadline_s)
        if kind == "mei":
            return self._meis(n, predictor, deadline_s)
        raise ValueError(kind)

    def _repeats(self, n: int) -> list[Choice]:
        out = []
        for _ in range(n):
            k = self._repeat_cursor % len(self.repeat_set)
            i = int(self.repeat_set[k])
            out.append(Choice(self.pools.train[i], f"repeat fixed#{k} pool#{i}"))
            self._repeat_cursor += 1
        return out

    def _random(self, n: int, source: np.ndarray) -> list[int]:
        """n images of `source` not yet shown in this block: the next ones along a random order of `source` that
        the session's seeds fix (their own stream), whatever else the mix shows. Two sessions with the same seeds
        show their random images in the same order, so a closed loop compared with random images at paired seeds
        shows random-natural's own images in its random and cold-start slots (common random numbers: the
        comparison's spread is the choices', not the draws')."""
        if len(source) < n:
            raise ValueError(f"{n} random images asked of a source of {len(source)}")
        key = np.asarray(source, np.int64).tobytes()  # random_from and candidates_from may name the same images
        walk = self._random_walks.get(key)
        if walk is None:
            walk = self._random_walks[key] = [self.random_rng.permutation(source), 0]
        allow_shown = len(source) - len(self._shown_idx.intersection(source.tolist())) < n
        idx: list[int] = []
        while len(idx) < n:
            if walk[1] >= len(walk[0]):  # the whole order walked: a fresh one
                walk[0], walk[1] = self.random_rng.permutation(source), 0
            i = int(walk[0][walk[1]])
            walk[1] += 1
            if i not in idx and (allow_shown or i not in self._shown_idx):
                idx.append(i)
        self._shown_idx.update(idx)
        return idx

    def _reference_hz(self, predictor) -> torch.Tensor:
        """The members' rates (M, R, N) for the reference images, computed once per predictor version."""
        key = (getattr(predictor, "version", None), id(predictor))
        if self._reference_rates is None or self._reference_rates[:2] != key:
            with torch.no_grad():
                parts = [
                    predictor.rates(from_pixels(self.pools.train[self.reference[s : s + self.cfg.score_batch]]))
                    for s in range(0, len(self.reference), self.cfg.score_batch)
                ]
            self._reference_rates = (*key, torch.cat(parts, 1).detach())
        return self._reference_rates[2]

    def _objective(self, predictor, neurons=None):
        """(score, rates -> per-neuron score): the rig's objective on rates of the given neurons (all if None)."""
        weights = self.hypothesis_weights
        if weights is not None and len(weights) != predictor.n_members:
            weights = None
        kind, window, fano = self.cfg.objective, self.window_s, self.cfg.fano_factor
        reference = None
        if kind == "epig":
            reference = self._reference_hz(predictor)
            if neurons is not None:
                reference = reference[:, :, list(neurons)]

        def score(rates: torch.Tensor) -> torch.Tensor:
            return discrimination_score(rates, kind, window, weights, reference, fano)

        return score

    def _score_pool(self, n_needed: int, predictor, deadline_s: float | None):
        """Scores a fresh random draw of candidates from `candidates_from`; returns (pool indices, scores,
        per-neuron scores, model features or None)."""
        shown = np.fromiter(self._shown_idx, int, len(self._shown_idx))
        avail = np.setdiff1d(self.candidate_pool, shown)
        if len(avail) < n_needed:
            avail = self.candidate_pool
        m = min(self.cfg.candidates, len(avail))
        cand = self.rng.choice(avail, m, replace=False)
        score = self._objective(predictor)
        want_features = self.cfg.diversity == "model"
        parts, feats = [], []
        with torch.no_grad():
            for s in range(0, m, self.cfg.score_batch):
                if parts and deadline_s is not None and time.perf_counter() >= deadline_s:
                    break  # score what there was time for
                batch = from_pixels(self.pools.train[cand[s : s + self.cfg.score_batch]])
                rates = predictor.rates(batch)
                parts.append(score(rates).double().numpy())
                if want_features:
                    # Without a features method the mean rates are the features: no second forward pass.
                    f = (
                        model_features(predictor, batch)
                        if callable(getattr(predictor, "features", None))
                        else rates.mean(0)
                    )
                    feats.append(f.double().numpy())
        pn = np.concatenate(parts)
        cand = cand[: len(pn)]
        return cand, pn.sum(1), pn, (np.concatenate(feats) if feats else None)

    def _ranked_diverse(self, n: int, predictor, deadline_s: float | None):
        cand, score, pn, feats = self._score_pool(n, predictor, deadline_s)
        if feats is None:
            avoid = np.stack(self._shown_thumbs) if self._shown_thumbs else None
            rows = pick_diverse(score, self.thumbs[cand], n, self.cfg.min_distance, avoid)
        else:
            n_shown = len(self._shown_pixels)
            if n_shown:
                with torch.no_grad():
                    shown = model_features(predictor, from_pixels(np.stack(self._shown_pixels))).double().numpy()
                feats = np.concatenate([feats, shown])
            # Standardised over candidates and this block's images together, so both sit in the same units.
            z = standardized(feats)
            avoid = z[len(cand) :] if n_shown else None
            rows = pick_diverse(score, z[: len(cand)], n, self.cfg.feature_min_distance, avoid)
        return cand[rows], score[rows], pn[rows]

    def _selected(self, n: int, predictor, deadline_s: float | None) -> list[Choice]:
        idx, score, _ = self._ranked_diverse(n, predictor, deadline_s)
        self._shown_idx.update(int(i) for i in idx)
        return [
            Choice(self.pools.train[i], f"selected {self.cfg.objective} {s:.3g} pool#{i}") for i, s in zip(idx, score)
        ]

    def _synthesized(self, n: int, predictor, deadline_s: float | None) -> list[Choice]:
        cfg = self.cfg
        idx, _, pn = self._ranked_diverse(n, predictor, deadline_s)
        # Compute only the neurons where these images already discriminate best: the few that matter.
        top = np.argsort(-pn, axis=1)[:, :4]
        neurons = sorted(set(int(j) for j in top.ravel()))
        if cfg.synthesis_start == "pool":
            init, origin = from_pixels(self.pools.train[idx]), [f"from pool#{i}" for i in idx]
        else:
            seed = int(self.rng.integers(2**31))
            init, origin = noise_images(n, self.image_shape, seed), ["from noise"] * n
        score = self._objective(predictor, neurons)
        syn_deadline = None
        if deadline_s is not None:
            now = time.perf_counter()
            syn_deadline = now + cfg.deadline_share * max(0.0, deadline_s - now)
        result = synthesize(
            lambda x: population_score(score(predictor.rates(x, neurons=neurons))),
            init,
            max_steps=cfg.synthesis_steps,
            deadline_s=syn_deadline,
            step_size=cfg.synthesis_step_size,
            transform=Jitter(cfg.synthesis_jitter_px, int(self.rng.integers(2**31))),
            project=self.natural_range,
        )
        pixels = to_pixels(result.images)
        out = []
        for b in range(n):
            best = [neurons[j] for j in np.argsort(-pn[b][neurons])[:2]]
            names = ",".join(str(j) for j in best)
            out.append(
                Choice(
                    pixels[b],
                    f"synthesized {cfg.objective} {float(result.scores[b]):.3g} "
                    f"neurons[{names}] {origin[b]} ({result.steps} steps)",
                )
            )
        return out

    def _meis(self, n: int, predictor, deadline_s: float | None) -> list[Choice]:
        cfg = self.cfg
        neurons = [(self._mei_cursor + k) % predictor.n_neurons for k in range(n)]
        self._mei_cursor += n
        seed = int(self.rng.integers(2**31))
        init, origin = None, ["from noise"] * n
        if cfg.mei_start in ("pool", "recorded"):
            # The model's best of a fresh draw of natural images, for these neurons only (cheap: only they are
            # computed): the ascent then starts on the natural manifold, where the model was fitted.
            cand = self.rng.choice(self.natural, min(cfg.candidates, len(self.natural)), replace=False)
            start = cand[
                best_pool_images(predictor, neurons, self.pools.train[cand], cfg.mei_spread_penalty, cfg.score_batch)
            ]
            init, origin = self.pools.train[start], [f"from pool#{i}" for i in start]
        if cfg.mei_start == "recorded":
            # The shown image the neuron answered most strongly: the ascent starts from what the neuron, not only
            # the model, rates highly (the pool start's best of a fresh draw where it has none yet).
            for b, j in enumerate(neurons):
                rec = self._recorded_start(j)
                if rec is not None:
                    init[b], origin[b] = rec[0], f"from the shown image it answered at {rec[1]:.1f}Hz"
        mei_deadline = None
        if deadline_s is not None:
            now = time.perf_counter()
            mei_deadline = now + cfg.deadline_share * max(0.0, deadline_s - now)
        # Neurons whose MEIs fell short of their predictions get cautious ones (stimulus/mei_hold.py): grouped by
        # caution level, each group synthesized with its own steps and disagreement penalty.
        seen = {j: summarize(*row) for j, row in self._mei_seen.items()}
        pooled = summarize(*np.sum(list(self._mei_seen.values()), axis=0)) if self._mei_seen else None
        levels, whys = zip(*(self._mei_caution(j, seen, pooled) for j in neurons))
        pixels = np.zeros((n, *self.image_shape), np.uint8)
        notes = [""] * n
        for k in sorted(set(levels)):
            rows = [b for b in range(n) if levels[b] == k]
            steps, penalty = cautious_settings(cfg.mei_steps, cfg.mei_spread_penalty, k)
            pixels[rows] = most_exciting_images(
                predictor,
                [neurons[b] for b in rows],
                self.image_shape,
                steps=steps,
                seed=seed + k,
                deadline_s=mei_deadline,
                init=None if init is None else init[rows],
                spread_penalty=penalty,
                project=self.natural_range,
            )
            if k:
                for b in rows:
                    notes[b] = f" (cautious {k}: {whys[b]}; {steps} steps, spread penalty {penalty:g})"
        with torch.no_grad():  # the members' mean rate (not the penalised score): what the report checks against
            r = predictor.rates(from_pixels(pixels), neurons=neurons).mean(0).numpy()
        for b, j in enumerate(neurons):
            self._mei_made[pixels_key(pixels[b])] = (j, float(f"{r[b, b]:.1f}"))
        return [
            Choice(pixels[b], f"mei neuron#{j} predicted {r[b, b]:.1f}Hz {origin[b]}{notes[b]}")
            for b, j in enumerate(neurons)
        ]

    def _evolved_one(self, predictor, deadline_s: float | None) -> Choice:
        """One child of the response-driven search (stimulus/evolution.py), for the neuron the model explains
        worst; its parents are the images with that neuron's highest recorded rates."""
        cfg, archive = self.cfg, self.archive
        items, rates = archive.rates()
        if len(items) < 2 or not archive.n_neurons:
            i = self._random(1, self.random_pool)[0]
            archive.name(self.pools.train[i], f"pool#{i}", 0)
            return Choice(self.pools.train[i], f"evolved seed random pool#{i} (too few responses yet)")
        n_neurons = archive.n_neurons
        if predictor is not None and deadline_s is not None and time.perf_counter() >= deadline_s:
            predictor = None
        # The budget's weights: once per plan (the archive does not change within one) on the latest
        # EVOLVE_WEIGHT_IMAGES images shown, so their cost stays bounded however long the session.
        key = (len(items), getattr(predictor, "version", None), id(predictor) if predictor is not None else None)
        if self._evolve_weights is None or self._evolve_weights[0] != key:
            recent = slice(-self.EVOLVE_WEIGHT_IMAGES, None)
            shown = np.stack([it.pixels for it in items[recent]])
            self._evolve_weights = (key, target_weights(rates[recent], predictor, shown, n_neurons))
        weights = self._evolve_weights[1]
        target = int(self.rng.choice(n_neurons, p=weights))
        m = cfg.evolve_candidates if predictor is not None else 1
        children = []
        for _ in range(m):
            a, b = choose_parents(rates[:, target], cfg.evolve_parents, self.rng)
            immigrant_i = int(self.rng.choice(self.natural)) if self.rng.random() < 0.3 else None
            immigrant = None if immigrant_i is None else self.pools.train[immigrant_i]
            px, how = breed(items[a].pixels, items[b].pixels, immigrant, self.rng)
            if immigrant_i is not None:
                how += f" pool#{immigrant_i}"
            children.append((px, a, b, how))
        screen = ""
        pick = 0
        if m > 1:
            with torch.no_grad():
                pred = predictor.rates(from_pixels(np.stack([c[0] for c in children])), neurons=[target])
            pred = pred.mean(0)[:, 0].double().numpy()
            pick = int(np.argmax(pred))
            screen = f", model screened {m}: predicted {pred[pick]:.1f}Hz"
        px, a, b, how = children[pick]
        gen = max(items[a].generation, items[b].generation) + 1
        self._evolved_made += 1
        label = f"evo#{self._evolved_made}"
        archive.name(px, label, gen)
        return Choice(
            px,
            f"evolved {label} for neuron {target} from {items[a].label} x {items[b].label} ({how}, gen {gen}; "
            f"parents recorded {rates[a, target]:.1f}/{rates[b, target]:.1f}Hz){screen}",
        )
