"""Image selection: the block mix, diverse scored picks, synthesis and MEIs through the chooser, deadlines."""

import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from stimulus.mix import MixSchedule
from stimulus.pools import Pools
from stimulus.selection import ImageChooser, pick_diverse, pool_indices, rms_distance, standardized, thumbnails
from stimulus.selection_config import SelectionConfig


class MembersDisagreeOnBrightLeft:
    """Two members agree except on images with a bright left half, where member 1 fires more."""

    n_members, n_neurons, version = 2, 3, 5

    def rates(self, images, neurons=None):
        left = images[:, :, :, : images.shape[-1] // 2].mean(dim=(1, 2, 3))
        base = 10.0 + 5.0 * images.mean(dim=(1, 2, 3))
        r0 = torch.stack([base, base, base], 1)
        r1 = torch.stack([base + 40.0 * left**2, base, base], 1)
        out = torch.stack([r0, r1])
        return out if neurons is None else out[:, :, list(neurons)]


def pool_index(reason: str) -> int:
    """The pool image a choice's reason names ("... pool#123 ...")."""
    return int(reason.split("pool#")[1].split()[0])


def make_pool(n_base=12, copies=6, seed=0):
    """Groups of near-duplicates: each base image and copies of it with a little noise."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 256, (n_base, 1, 1, 3)) * np.ones((1, 16, 16, 1))
    bases[:, :, :8] = rng.integers(0, 256, (n_base, 1, 1, 3))  # left half a separate colour
    imgs = np.repeat(bases, copies, axis=0) + rng.normal(0, 3, (n_base * copies, 16, 16, 3))
    imgs = np.clip(imgs, 0, 255).astype(np.uint8)
    return Pools(imgs, ("natural",) * len(imgs), imgs[:10])


def test_mix_schedule_meets_shares_within_each_block():
    mix = MixSchedule({"random": 0.2, "selected": 0.4, "synthesized": 0.2, "repeat": 0.2}, block_trials=10)
    block = [k for t in range(10) for k in mix.kinds_for(t, 5)]
    assert {k: block.count(k) for k in set(block)} == {"random": 10, "selected": 20, "synthesized": 10, "repeat": 10}
    # Every trial already holds the mix within one image.
    first = MixSchedule({"random": 0.5, "selected": 0.5}, 3).kinds_for(0, 4)
    assert first.count("random") == 2
    with pytest.raises(ValueError):
        SelectionConfig(mix={"bogus": 1.0})


def test_without_a_model_it_still_returns_natural_images_and_says_why():
    pools = make_pool()
    cfg = SelectionConfig(mix={"selected": 0.5, "synthesized": 0.25, "repeat": 0.25})
    out = ImageChooser(cfg, pools, seed=1).choose(0, 8, None, None)
    assert len(out) == 8
    assert all(c.pixels.shape == (16, 16, 3) and c.pixels.dtype == np.uint8 for c in out)
    assert sum("no model yet" in c.reason for c in out) == 6
    assert sum(c.reason.startswith("repeat fixed#") for c in out) == 2
    for c in out:  # each is the pool image its reason names, unaltered
        assert np.array_equal(c.pixels, pools.train[pool_index(c.reason)]), c.reason


def test_random_images_come_in_the_same_order_whatever_else_the_mix_shows():
    """Paired sessions (same seeds) show random-natural's images, in its order, in a closed loop's random and
    cold-start slots: the comparison's spread is the choices', not the draws'."""
    pools = make_pool(n_base=40, copies=5)
    random_only = ImageChooser(SelectionConfig(mix={"random": 1.0}, repeat_set_size=3), pools, seed=4)
    mixed = ImageChooser(
        SelectionConfig(mix={"random": 0.3, "selected": 0.4, "mei": 0.1, "repeat": 0.2}, repeat_set_size=3),
        pools,
        seed=4,
    )

    reference = [pool_index(c.reason) for t in range(12) for c in random_only.choose(t, 5)]
    shown = [c.reason for t in range(12) for c in mixed.choose(t, 5)]  # no model: a cold start
    drawn = [pool_index(r) for r in shown if r.startswith("random pool#")]
    assert len(drawn) > 40 and any(r.startswith("repeat") for r in shown)
    # Random-only's images, in its order: within a trial the slots may hold them in another order, and a pool
    # image the mixed session showed otherwise in the block (a repeat) is passed over.
    assert set(drawn) <= set(reference[: len(shown)])
    first_trial = [pool_index(r) for r in shown[:5] if r.startswith("random pool#")]
    assert len(first_trial) >= 3 and sorted(first_trial) == sorted(reference[: len(first_trial)])
    # Another seed, another order.
    other = ImageChooser(SelectionConfig(mix={"random": 1.0}, repeat_set_size=3), pools, seed=5)
    assert [pool_index(c.reason) for c in other.choose(0, 5)] != reference[:5]


def test_selected_images_are_the_discriminating_ones_and_never_near_duplicates():
    pools = make_pool()
    cfg = SelectionConfig(mix={"selected": 1.0}, objective="js", min_distance=0.05, candidates=10_000)
    chooser = ImageChooser(cfg, pools, seed=0)
    p = MembersDisagreeOnBrightLeft()
    out = chooser.choose(0, 5, p, None)
    th = thumbnails(np.stack([c.pixels for c in out]))
    d = rms_distance(th, th)[~np.eye(5, dtype=bool)]
    assert d.min() >= 0.05  # five different groups, not five copies of the best one
    assert all(c.reason.startswith("selected js ") for c in out)
    # They are the brightest-left groups: the best five of the twelve.
    left = pools.train[:, :, :8].mean(axis=(1, 2, 3))
    group_left = np.sort(np.unique(np.round(left, -1)))[::-1]
    chosen_left = np.sort(np.round([c.pixels[:, :8].mean() for c in out], -1))[::-1]
    assert chosen_left.min() >= group_left[6]
    # The next trial of the same block avoids what was just shown.
    out2 = chooser.choose(1, 3, p, None)
    d2 = rms_distance(thumbnails(np.stack([c.pixels for c in out2])), th)
    assert d2.min() >= 0.05


def test_pick_diverse_fills_up_when_everything_is_a_duplicate():
    thumbs = np.zeros((4, 6))
    picks = pick_diverse(np.array([1.0, 3.0, 2.0, 0.0]), thumbs, 3, 0.1)
    assert picks == [1, 2, 0]  # one diverse pick, then the best of the rest


def test_synthesized_images_beat_their_pool_seeds_and_record_why():
    pools = make_pool()
    cfg = SelectionConfig(mix={"synthesized": 1.0}, synthesis_steps=30, synthesis_step_size=0.05)
    p = MembersDisagreeOnBrightLeft()
    out = ImageChooser(cfg, pools, seed=0).choose(0, 2, p, None)
    for c in out:
        assert c.reason.startswith("synthesized js ") and "neurons[0" in c.reason and "from pool#" in c.reason
        seed_idx = pool_index(c.reason)
        assert float(c.reason.split()[2]) > 0  # the reason carries the objective's value
        x = torch.from_numpy(np.stack([c.pixels, pools.train[seed_idx]])).permute(0, 3, 1, 2).float() / 255
        r = p.rates(x)[:, :, 0]
        assert (r[1, 0] - r[0, 0]) > (r[1, 1] - r[0, 1])  # members disagree more on the synthesized image


def test_meis_repeats_and_reproducibility():
    pools = make_pool()
    cfg = SelectionConfig(mix={"mei": 0.5, "repeat": 0.5}, mei_steps=20, repeat_set_size=3)
    p = MembersDisagreeOnBrightLeft()
    a = ImageChooser(cfg, pools, seed=3).choose(0, 8, p, None)
    b = ImageChooser(cfg, pools, seed=3).choose(0, 8, p, None)
    assert [c.reason for c in a] == [c.reason for c in b]
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b))
    meis = [c.reason for c in a if c.reason.startswith("mei ")]
    assert [r.split()[1] for r in meis] == ["neuron#0", "neuron#1", "neuron#2", "neuron#0"]
    repeats = [c.reason.split()[1] for c in a if c.reason.startswith("repeat")]
    assert repeats == ["fixed#0", "fixed#1", "fixed#2", "fixed#0"]


def test_a_deadline_in_the_past_falls_back_to_pool_images_at_once():
    pools = make_pool()
    cfg = SelectionConfig(mix={"selected": 0.5, "synthesized": 0.5}, synthesis_steps=100_000)
    t0 = time.perf_counter()
    out = ImageChooser(cfg, pools).choose(0, 4, MembersDisagreeOnBrightLeft(), t0 - 1.0)
    assert time.perf_counter() - t0 < 3.0  # 100,000 synthesis steps would take minutes; slack for a busy machine
    assert len(out) == 4 and all("past deadline" in c.reason for c in out)


def test_synthesis_respects_a_near_deadline():
    pools = make_pool()
    cfg = SelectionConfig(mix={"synthesized": 1.0}, synthesis_steps=100_000)
    t0 = time.perf_counter()
    out = ImageChooser(cfg, pools).choose(0, 2, MembersDisagreeOnBrightLeft(), t0 + 0.5)
    assert time.perf_counter() - t0 < 0.5 + 2.0  # slack for a loaded machine; 100,000 steps would take minutes
    assert all(c.reason.startswith("synthesized") for c in out)


# ----------------------------------------------------------------------------- candidates, EPIG, diversity


def natural_and_gaudy_pool(n=40, seed=0):
    """Smooth natural-like images (varying left-half brightness) and their gaudy versions (Cowley et al.)."""
    from stimulus.pools import gaudy

    rng = np.random.default_rng(seed)
    level = rng.uniform(60, 200, (n, 1, 1, 1))
    left = rng.uniform(-40, 40, (n, 1, 1, 1))
    nat = level + rng.normal(0, 12, (n, 16, 16, 3))
    nat[:, :, :8] += left
    nat = np.clip(nat, 0, 255).astype(np.uint8)
    imgs = np.concatenate([nat, gaudy(nat)])
    return Pools(imgs, ("natural",) * n + ("gaudy",) * n, nat[:5])


class MembersDisagreeMostOnGaudy:
    """Four members. On every image their disagreement follows the left half's brightness (so it carries over
    to natural images); on high-contrast (gaudy) images they also disagree, far more, in a pattern no natural
    image shares. Disagreement prefers the gaudy images; information about natural images does not."""

    n_members, n_neurons, version = 4, 2, 1

    def rates(self, images, neurons=None):
        left = images[:, :, :, :8].mean(dim=(1, 2, 3)) - images.mean(dim=(1, 2, 3))
        contrast = images.flatten(1).std(1)
        wild = torch.relu(contrast - 0.3) * 400.0  # zero on natural images (RMS ~0.05-0.2), large on gaudy
        a = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1)
        b = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(4, 1)
        r0 = 20.0 + 60.0 * a * left + b * wild
        out = torch.stack([r0, 20.0 + 0.0 * r0], -1)  # (4, B, 2); the second neuron is silent on everything
        return out if neurons is None else out[:, :, list(neurons)]


def test_candidates_from_restricts_the_pool_and_an_empty_choice_is_refused():
    pools = natural_and_gaudy_pool()
    p = MembersDisagreeMostOnGaudy()
    for source, allowed in (("natural", range(0, 40)), ("gaudy", range(40, 80))):
        cfg = SelectionConfig(
            mix={"selected": 1.0},
            objective="disagreement",
            candidates_from=source,
            candidates=30,
            diversity="thumbnails",
            min_distance=0.0,
        )
        chooser = ImageChooser(cfg, pools, seed=0)
        for t in range(3):
            for c in chooser.choose(t, 5, p, None):
                assert pool_index(c.reason) in allowed, (source, c.reason)
    # Random images come from random_from; kinds that need a model, before one exists, from their candidates.
    cfg = SelectionConfig(mix={"random": 0.5, "selected": 0.5}, candidates_from="gaudy", random_from="natural")
    for c in ImageChooser(cfg, pools, seed=0).choose(0, 10, None, None):
        i = pool_index(c.reason)
        assert pools.train_kind[i] == ("gaudy" if "no model yet" in c.reason else "natural"), c.reason
    both = ImageChooser(SelectionConfig(candidates_from="both"), pools)
    assert len(both.candidate_pool) == 80
    only_natural = Pools(pools.train[:40], ("natural",) * 40, pools.test)
    with pytest.raises(ValueError, match=r"candidates_from = 'gaudy'.*no such images.*gaudy_share"):
        ImageChooser(SelectionConfig(candidates_from="gaudy"), only_natural)
    with pytest.raises(ValueError, match="candidates_from"):
        pool_indices(("natural",), "photos")


def test_bad_selection_values_are_refused_naming_the_key():
    for key, value in (
        ("objective", "infomax"),
        ("candidates_from", "photos"),
        ("diversity", "pixels"),
        ("contrast_bound", "loose"),
        ("mei_spread_penalty", -1.0),
        ("fano_factor", 0.0),
        ("contrast_percentiles", (99.0, 1.0)),
    ):
        with pytest.raises(ValidationError, match=key):
            SelectionConfig(**{key: value})


def test_a_rig_file_with_a_bad_candidates_from_names_the_key(tmp_path):
    from controller.config import RigFileError, load_rig

    path = tmp_path / "rig.toml"
    path.write_text('[selection]\nobjective = "epig"\ncandidates_from = "photos"\n')
    with pytest.raises(RigFileError, match="selection.candidates_from"):
        load_rig(path)


def test_epig_picks_natural_images_where_disagreement_picks_gaudy_ones():
    pools = natural_and_gaudy_pool()
    p = MembersDisagreeMostOnGaudy()
    picked = {}
    for objective in ("disagreement", "epig"):
        cfg = SelectionConfig(
            mix={"selected": 1.0}, objective=objective, candidates_from="both", candidates=80, reference_size=20
        )
        out = ImageChooser(cfg, pools, seed=0).choose(0, 5, p, None)
        picked[objective] = [pools.train_kind[pool_index(c.reason)] for c in out]
        assert all(c.reason.startswith(f"selected {objective} ") for c in out)
    assert picked["disagreement"].count("gaudy") == 5
    assert picked["epig"].count("natural") == 5


def test_epig_reference_set_is_natural_pool_images_and_never_the_test_set():
    pools = natural_and_gaudy_pool()
    chooser = ImageChooser(SelectionConfig(objective="epig", reference_size=15), pools, seed=2)
    assert len(chooser.reference) == 15 and all(pools.train_kind[i] == "natural" for i in chooser.reference)
    # Indices into the training pool: the held-out test set (pools.test) is a separate array never indexed.
    assert chooser.reference.max() < 40 and len(set(chooser.reference.tolist())) == 15
    again = ImageChooser(SelectionConfig(objective="epig", reference_size=15), pools, seed=2)
    assert np.array_equal(chooser.reference, again.reference)  # fixed for the session (seeded)


def test_synthesized_images_under_epig_gain_information_and_stay_in_the_natural_range():
    pools = natural_and_gaudy_pool()
    p = MembersDisagreeMostOnGaudy()
    cfg = SelectionConfig(
        mix={"synthesized": 1.0},
        objective="epig",
        candidates_from="natural",
        synthesis_steps=30,
        synthesis_step_size=0.05,
        reference_size=20,
    )
    chooser = ImageChooser(cfg, pools, seed=0)
    out = chooser.choose(0, 2, p, None)
    for c in out:
        assert c.reason.startswith("synthesized epig ") and "from pool#" in c.reason
        seed_idx = pool_index(c.reason)
        score = chooser._objective(p)
        x = torch.from_numpy(np.stack([c.pixels, pools.train[seed_idx]])).permute(0, 3, 1, 2).float() / 255
        s = score(p.rates(x)).sum(1)
        assert s[0] > s[1]  # more information than the pool image it started from
        assert chooser.natural_range.contains(x[:1], tol=2 / 255).all()


class FeaturesSayGroups(MembersDisagreeOnBrightLeft):
    """The same members, with a features method that sees only the left half's colour, coarsely: images the
    thumbnails call different can be the same to the model."""

    def __init__(self):
        self.calls = 0

    def features(self, images):
        self.calls += 1
        return torch.floor(images[:, :, :, :8].mean(dim=(2, 3)) * 2.0)


def test_model_space_diversity_uses_the_predictors_features_when_it_has_them():
    pools = make_pool()
    p = FeaturesSayGroups()
    cfg = SelectionConfig(
        mix={"selected": 1.0}, objective="js", diversity="model", feature_min_distance=0.05, candidates=10_000
    )
    out = ImageChooser(cfg, pools, seed=0).choose(0, 4, p, None)
    assert p.calls > 0
    f = p.features(torch.from_numpy(np.stack([c.pixels for c in out])).permute(0, 3, 1, 2).float() / 255).numpy()
    distinct_in_pool = len(
        np.unique(p.features(torch.from_numpy(pools.train).permute(0, 3, 1, 2).float() / 255).numpy(), axis=0)
    )
    assert len(np.unique(f, axis=0)) == min(4, distinct_in_pool)  # no two picks the same to the model
    # standardized: unrelated rows about 1 apart, identical rows 0.
    z = standardized(np.random.default_rng(0).normal(size=(400, 30)) * 7.0 + 3.0)
    d = rms_distance(z, z)[~np.eye(400, dtype=bool)]
    assert 0.9 < np.median(d) < 1.1


def test_meis_start_from_the_models_best_natural_image_and_keep_natural_contrast():
    pools = natural_and_gaudy_pool()
    p = MembersDisagreeOnBrightLeft()
    cfg = SelectionConfig(mix={"mei": 1.0}, mei_steps=20, candidates=80, mei_spread_penalty=1.0)
    chooser = ImageChooser(cfg, pools, seed=0)
    out = chooser.choose(0, 2, p, None)
    for c in out:
        start = int(c.reason.split("from pool#")[1].split()[0])
        assert pools.train_kind[start] == "natural"
        assert chooser.natural_range.contains(
            torch.from_numpy(c.pixels[None]).permute(0, 3, 1, 2).float() / 255, tol=2 / 255
        ).all()
