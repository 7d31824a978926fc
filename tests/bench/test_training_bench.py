"""The training benchmark's bandwidth estimate: the bytes a step must move, on a size worked out by hand."""

from bench.training import step_bytes
from models.compact import CompactSpec, make_models


def test_step_bytes_counts_input_activations_and_optimizer_state():
    spec = CompactSpec(1, 4, (2,), (1,), 3)
    params = sum(p.numel() for p in make_models(spec, 1)[0].parameters())
    # input 1 x 4 x 4 = 16 values; layer 0: (0 + 2 * 2) maps of 4 x 4 = 64; read and written 3 times,
    # 2 bytes each; parameters, gradients and two Adam moments at 4 bytes each.
    assert step_bytes(spec, k=1, batch=1, act_bytes=2) == 3.0 * (16 + 64) * 2 + 16.0 * params
    assert step_bytes(spec, k=2, batch=3, act_bytes=2) == 3.0 * (3 * 16 + 3 * 2 * 64) * 2 + 16.0 * 2 * params
