"""Named hypotheses and the evidence tracker."""

import textwrap

import numpy as np
import pytest
import torch

from stimulus.hypotheses import (
    EvidenceTracker,
    HypothesisSet,
    build_hypotheses,
    load_hypothesis,
    member_hypothesis,
    poisson_log_likelihood,
)
from stimulus.selection_config import HypothesisSpec, SelectionConfig

LAB_MODULE = '''
import torch

def dot_detector(images):
    """Neuron 0 likes a bright dot in the centre; neuron 1 does not care."""
    centre = images[:, :, 6:10, 6:10].mean(dim=(1, 2, 3))
    surround = images.mean(dim=(1, 2, 3))
    r0 = 5.0 + 60.0 * torch.relu(centre - surround)
    return torch.stack([r0, torch.full_like(r0, 8.0)], 1)

def edge_detector(images):
    left, right = images[:, :, :, :8].mean(dim=(1, 2, 3)), images[:, :, :, 8:].mean(dim=(1, 2, 3))
    r0 = 5.0 + 60.0 * (left - right).abs()
    return torch.stack([r0, torch.full_like(r0, 8.0)], 1)

NOT_CALLABLE = 3
'''


@pytest.fixture
def lab_module(tmp_path, monkeypatch):
    (tmp_path / "lab_hypotheses.py").write_text(textwrap.dedent(LAB_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "lab_hypotheses"


def test_hand_written_hypothesis_loads_by_import_path(lab_module):
    fn = load_hypothesis(f"{lab_module}:dot_detector")
    img = torch.full((1, 3, 16, 16), 0.2)
    img[:, :, 6:10, 6:10] = 1.0
    assert fn(img)[0, 0] > 30.0
    with pytest.raises(ValueError):
        load_hypothesis(f"{lab_module}:no_such_function")
    with pytest.raises(ValueError):
        load_hypothesis(f"{lab_module}:NOT_CALLABLE")
    with pytest.raises(ValueError):
        load_hypothesis("no_colon_here")


def test_rig_file_hypotheses_build_a_predictor(lab_module):
    cfg = SelectionConfig(
        hypotheses=[
            {"name": "dot", "source": "import", "path": f"{lab_module}:dot_detector"},
            {"name": "edge", "source": "import", "path": f"{lab_module}:edge_detector"},
        ]
    )
    hs = build_hypotheses(cfg.hypotheses, n_neurons=2)
    assert hs.names == ["dot", "edge"] and hs.n_members == 2
    dot = torch.full((3, 16, 16), 0.2)
    dot[:, 6:10, 6:10] = 1.0  # centre 1.0, image mean 0.25; left and right halves equal
    edge = torch.zeros(3, 16, 16)
    edge[:, :, :8] = 1.0  # left 1, right 0; centre and image mean both 0.5
    r = hs.rates(torch.stack([dot, edge]), neurons=[0])
    # (hypothesis, image, neuron), each hypothesis's own function in the rig file's order.
    assert torch.allclose(r, torch.tensor([[[50.0], [5.0]], [[5.0], [65.0]]]))
    assert torch.allclose(hs.rates(torch.stack([dot, edge]), neurons=[1]), torch.full((2, 2, 1), 8.0))
    with pytest.raises(ValueError, match="appears twice"):
        build_hypotheses([cfg.hypotheses[0], cfg.hypotheses[0]], n_neurons=2)
    with pytest.raises(ValueError):
        HypothesisSpec(name="x", source="import", path="missing_colon")


def test_member_hypotheses_wrap_ensemble_members():
    class TwoMembers:
        n_members, n_neurons, version = 2, 3, 7

        def rates(self, images, neurons=None):
            base = torch.stack([torch.full((len(images), 3), 10.0), torch.full((len(images), 3), 20.0)])
            return base if neurons is None else base[:, :, list(neurons)]

    p = TwoMembers()
    specs = [HypothesisSpec(name="a", source="member", member=0), HypothesisSpec(name="b", source="member", member=1)]
    hs = build_hypotheses(specs, 3, predictor=p)
    assert hs.version == 7
    assert torch.allclose(hs.rates(torch.zeros(2, 3, 4, 4), neurons=[2])[:, 0, 0], torch.tensor([10.0, 20.0]))
    with pytest.raises(ValueError):
        member_hypothesis(p, 5)
    with pytest.raises(ValueError):
        HypothesisSet({"only": lambda x: x}, 1)


def test_evidence_tracker_picks_the_true_hypothesis_from_simulated_counts():
    rng = np.random.default_rng(0)
    n_images, n_neurons, window = 5, 3, 0.15
    tracker = EvidenceTracker(["true", "wrong", "flat"], fano_factor=1.0)
    for trial in range(40):
        true_rates = rng.uniform(5, 60, (n_images, n_neurons))
        wrong = true_rates[::-1] * 1.0  # right tuning, wrong images
        flat = np.full_like(true_rates, true_rates.mean())
        counts = rng.poisson(true_rates * window)
        post = tracker.update(np.stack([true_rates, wrong, flat]), counts, window)
    rep = tracker.report()
    assert rep["best"] == "true" and rep["posterior"]["true"] > 0.99
    assert rep["updates"] == 40 and rep["presentations"] == 200
    assert rep["log_likelihood"]["true"] > rep["log_likelihood"]["flat"]
    assert len(tracker.history) == 40 and np.allclose(tracker.history[-1], post)
    with pytest.raises(ValueError):
        tracker.update(np.zeros((2, 5, 3)), np.zeros((5, 3)), window)


def test_tempering_by_fano_factor_and_prior():
    pred = np.array([[[10.0]], [[20.0]]])
    counts = np.array([[3]])
    plain, tempered = EvidenceTracker(["a", "b"]), EvidenceTracker(["a", "b"], fano_factor=2.0)
    plain.update(pred, counts, 0.2)
    tempered.update(pred, counts, 0.2)
    assert np.isclose(
        tempered.log_likelihood[0] - tempered.log_likelihood[1], (plain.log_likelihood[0] - plain.log_likelihood[1]) / 2
    )
    biased = EvidenceTracker(["a", "b"], prior=[9, 1])
    assert np.isclose(biased.posterior()[0], 0.9)
    # Poisson log-likelihood is normalised: probabilities over counts sum to one.
    k = np.arange(60)
    assert np.isclose(np.exp(poisson_log_likelihood(np.full(60, 50.0), k, 0.2)).sum(), 1.0)
