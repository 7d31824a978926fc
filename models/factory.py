"""Builds the online model the rig file asks for."""

from __future__ import annotations

from models.config import ModelConfig


def make_online_model(cfg: ModelConfig, n_neurons: int, image_shape: tuple[int, int, int]):
    """The online model of `cfg.kind` ("baseline", "compact", "shared"); ValueError for another kind."""
    if cfg.kind == "baseline":
        from models.baseline import RidgeBaseline

        return RidgeBaseline(cfg, n_neurons, image_shape)
    if cfg.kind == "compact":
        from models.online import CompactOnline

        return CompactOnline(cfg, n_neurons, image_shape)
    if cfg.kind == "shared":
        from models.shared_core import SharedCoreOnline

        return SharedCoreOnline(cfg, n_neurons, image_shape)
    raise ValueError(f"model.kind = {cfg.kind!r} is not available in this build")
