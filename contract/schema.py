"""The one base class of every rig-file section: unknown keys are refused and a loaded rig is immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A rig-file section: `extra="forbid"` names a misspelt key instead of ignoring it; frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)
