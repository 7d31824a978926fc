"""Saving compact models in a format that loads without cortexloop.

Each model is written twice, side by side (see docs/models.md):

- `<name>.pt`: `torch.save` of a plain dict that `torch.load(path, weights_only=True)`
  reads anywhere torch is installed:
      {"format": "cortexloop.compact/1",
       "spec": {"in_channels", "image_size", "filters" [per layer], "strides" [per layer], "kernel_size"},
       "state_dict": {name: tensor},        # names as in models/compact.py
       "meta": {"neuron": int, "units": "spikes/s", "input": "(B, C, H, W) float in [0, 1]", ...}}
  The forward pass is short enough to rewrite anywhere; docs/models.md gives it in
  plain torch.nn.functional.
- `<name>.ts`: TorchScript of the same model in eval mode: `torch.jit.load(path)(images)`
  runs it with no Python code of ours at all; the same dict minus the tensors is stored
  in it as the extra file "cortexloop.json".
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from models.compact import CompactNet, CompactSpec

FORMAT = "cortexloop.compact/1"


def model_record(model: CompactNet, meta: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def save_model(model: CompactNet, path: str | Path, meta: dict | None = None, torchscript: bool = True) -> list[Path]:
    """Writes `path` (.pt dict) and, unless told not to, the TorchScript twin (same stem, .ts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = model_record(model, meta)
    torch.save(record, path)
    written = [path]
    if torchscript:
        was_training = model.training
        device = next(model.parameters()).device
        frozen = CompactNet(model.spec)
        frozen.load_state_dict(record["state_dict"])
        frozen.eval()
        scripted = torch.jit.script(frozen)
        info = json.dumps({"format": FORMAT, "spec": record["spec"], "meta": record["meta"]})
        ts_path = path.with_suffix(".ts")
        torch.jit.save(scripted, str(ts_path), _extra_files={"cortexloop.json": info})
        written.append(ts_path)
        model.train(was_training).to(device)
    return written


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CompactNet, dict]:
    """Our own loader (the files do not need it): (model in eval mode, meta)."""
    record = torch.load(Path(path), map_location=device, weights_only=True)
    if record.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={record.get('format')!r})")
    model = CompactNet(CompactSpec.from_dict(record["spec"]))
    model.load_state_dict(record["state_dict"])
    return model.to(device).eval(), record["meta"]
