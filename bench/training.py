"""Benchmark: training speed of K compact models, stacked form against the per-model loop, in one run.

A step is forward, backward and AdamW on one batch shared by all K models, with the
options the online trainer uses (bf16 autocast and channels_last on CUDA, one
thread and flushed denormals on the CPU). Reported: milliseconds per step and
model-steps per second (K / step time) for each form, at the rig's sizes and at the
paper's (112x112x3, 100 filters a layer, strides 1,2,2,1,1). On CUDA also the
fraction of the memory-bandwidth bound reached: an estimate of the bytes a step
must move (every activation written once and read about twice more by the
backward pass, plus parameters, gradients and two Adam moments) divided by the
step time, over the bandwidth of a large device-to-device copy measured in the
same run.

    cortexloop bench training [--device cpu|cuda|auto] [--rig rigs/sim.toml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.compact import CompactSpec, make_models
from models.config import ModelConfig
from models.online import prepare_torch_for, resolve_device
from models.stacked import build_form

PAPER = CompactSpec(3, 112, (100,) * 5, (1, 2, 2, 1, 1), 5)


def step_bytes(spec: CompactSpec, k: int, batch: int, act_bytes: int) -> float:
    """Bytes a training step must move at least (see the module docstring)."""
    side = spec.image_size
    acts = batch * spec.in_channels * side * side
    for i, (f, s) in enumerate(zip(spec.filters, spec.strides)):
        side = (side - 1) // s + 1
        prev = spec.filters[i - 1] if i else 0
        # conv/depthwise output (+ pointwise output), batch-norm output, ReLU output
        acts += batch * k * (prev + 2 * f) * side * side
    params = k * sum(p.numel() for p in make_models(spec, 1)[0].parameters())
    return 3.0 * acts * act_bytes + 4 * 4.0 * params


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write)."""
    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    return 5 * 2 * src.numel() * 4 / (time.perf_counter() - t0)


def time_step(form: str, spec: CompactSpec, k: int, batch: int, steps: int, device: torch.device) -> float:
    """Seconds per training step of k models in `form`, averaged over `steps` steps after one warm-up step."""
    net = build_form(form, make_models(spec, k)).to(device)
    amp = device.type == "cuda"
    if amp:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x = torch.rand(batch, spec.in_channels, spec.image_size, spec.image_size, device=device)
    if amp:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.rand(batch, k, device=device) * 20
    for i in range(steps + 1):  # the first step warms up (allocations, kernel choice)
        if i == 1:
            if amp:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = net(x)
        loss = ((pred.float() - t) ** 2).mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if amp:
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench training` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench training", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--rig", help="rig file whose [model] and [images] sizes to use (default: built-in defaults)")
    ap.add_argument("--k", type=int, nargs="+", help="numbers of models at the rig's sizes")
    ap.add_argument("--paper-k", type=int, nargs="*", help="numbers of models at the paper's sizes (none: skip)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, help="timed steps per case (after one warm-up)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.rig:
        from controller.config import load_rig

        rig = load_rig(args.rig)
        mcfg, shape = rig.model, rig.images.shape
    else:
        mcfg, shape = ModelConfig(kind="compact"), (32, 32, 3)
    prepare_torch_for(device, mcfg.cpu_threads)
    rig_spec = CompactSpec.from_config(mcfg, shape)
    k_rig = args.k or ([100, 500] if cuda else [8, 32])
    k_paper = args.paper_k if args.paper_k is not None else ([100] if cuda else [1])
    steps = args.steps or (10 if cuda else 2)
    bandwidth = copy_bandwidth(device) if cuda else None

    rows = []
    cases = [("rig", rig_spec, k) for k in k_rig] + [("paper", PAPER, k) for k in k_paper]
    for label, spec, k in cases:
        row = {
            "sizes": label,
            "input": f"{spec.image_size}x{spec.image_size}x{spec.in_channels}",
            "filters": spec.filters[0],
            "k": k,
            "batch": args.batch,
        }
        for form in ("loop", "stacked"):
            try:
                s = time_step(form, spec, k, args.batch, steps, device)
            except torch.OutOfMemoryError:
                row[f"{form}_ms"] = None
                torch.cuda.empty_cache()
                continue
            row[f"{form}_ms"] = 1000 * s
            row[f"{form}_model_steps_per_s"] = k / s
            if bandwidth:
                row[f"{form}_bandwidth_frac"] = step_bytes(spec, k, args.batch, 2) / s / bandwidth
        rows.append(row)

    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}), "
        f"threads {torch.get_num_threads()}, {steps} timed step(s) per case"
    )
    head = (
        f"{'sizes':>6} {'input':>10} {'F':>4} {'K':>5} {'loop ms':>9} {'stacked ms':>11} "
        f"{'loop m-steps/s':>15} {'stacked m-steps/s':>18} {'stacked speedup':>16}"
    )
    if bandwidth:
        head += f" {'bw frac (loop/stacked)':>23}"
    print(head)
    print("-" * len(head))
    for r in rows:
        lm, sm = r.get("loop_ms"), r.get("stacked_ms")
        fmt = lambda v, w, p: f"{v:>{w}.{p}f}" if v is not None else f"{'oom':>{w}}"  # noqa: E731
        line = (
            f"{r['sizes']:>6} {r['input']:>10} {r['filters']:>4} {r['k']:>5} {fmt(lm, 9, 1)} {fmt(sm, 11, 1)} "
            f"{fmt(r.get('loop_model_steps_per_s'), 15, 1)} {fmt(r.get('stacked_model_steps_per_s'), 18, 1)} "
            f"{fmt(lm / sm if lm and sm else None, 16, 2)}"
        )
        if bandwidth:
            line += f" {fmt(r.get('loop_bandwidth_frac'), 11, 3)}/{fmt(r.get('stacked_bandwidth_frac'), 11, 3)}"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": str(device), "steps": steps, "copy_bandwidth_bytes_per_s": bandwidth, "rows": rows},
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
