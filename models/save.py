"""Saving compact models in a format that loads without cortexloop (the format, and the forward pass in plain
torch: docs/compress.md).

- `<name>.pt`: `torch.save` of a plain dict that `torch.load(path, weights_only=True)` reads:
      {"format": "cortexloop.compact/2",
       "spec": {"in_channels", "image_size", "filters" [per layer], "strides" [per layer], "kernel_size",
                "readout" ("softplus": rate_scale * softplus(drive); "linear": rate_scale * drive)},
       "state_dict": {name: tensor},        # names as in models/compact.py
       "meta": {"neuron": int, "units": "spikes/s", "input": "(B, C, H, W) float in [0, 1]", ...}}
- `models.pt2`: one `torch.export` program holding every model of a session, in eval mode:
  `torch.export.load(path).module()(images)` -> (B, n_models), no cortexloop code needed; the specs and
  metadata travel in it as the extra file "cortexloop.json". (torch.export, not the deprecated TorchScript.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.compact import CompactNet, CompactSpec

FORMAT = "cortexloop.compact/2"
# Format /1 files (no "readout" in the spec: softplus) load too.
READABLE = ("cortexloop.compact/1", FORMAT)


def model_record(model: CompactNet, meta: dict | None = None) -> dict:
    """The plain dict `save_model` writes (the module docstring's layout)."""
    return {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def save_model(model: CompactNet, path: str | Path, meta: dict | None = None) -> Path:
    """Writes the plain dict (see the module docstring) to `path` (conventionally neuron_NNN.pt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model_record(model, meta), path)
    return path


class _AllNeurons(torch.nn.Module):
    """Several (possibly differently pruned) models side by side: (B, C, H, W) -> (B, N)."""

    def __init__(self, models: list[CompactNet]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models], 1)


def export_models(models: list[CompactNet], path: str | Path, meta: dict | None = None) -> Path:
    """Writes one `torch.export` program computing every model at once: torch.export.load(path).module()(x).

    One program for the whole set, because exporting has a large cost per call, not per model.
    The specs and `meta` go along as the extra file "cortexloop.json".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    copies = []
    for m in models:
        c = CompactNet(m.spec)
        c.load_state_dict({k: v.detach().cpu() for k, v in m.state_dict().items()})
        copies.append(c.eval())
    wrapper = _AllNeurons(copies).eval()
    spec = models[0].spec
    example = torch.rand(2, spec.in_channels, spec.image_size, spec.image_size)
    batch = torch.export.Dim("batch", min=1, max=1_000_000)
    program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
    info = {
        "format": FORMAT,
        "output": "(B, n_models) spikes/s",
        "specs": [m.spec.to_dict() for m in models],
        "meta": dict(meta or {}),
    }
    torch.export.save(program, str(path), extra_files={"cortexloop.json": json.dumps(info)})
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CompactNet, dict]:
    """Our own loader (the files do not need it): (model in eval mode, meta)."""
    record = torch.load(Path(path), map_location=device, weights_only=True)
    if record.get("format") not in READABLE:
        raise ValueError(
            f"{path}: not a cortexloop compact model file (format={record.get('format')!r}, expected one of {READABLE})"
        )
    model = CompactNet(CompactSpec.from_dict(record["spec"]))
    model.load_state_dict(record["state_dict"])
    return model.to(device).eval(), record["meta"]
