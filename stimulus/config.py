"""Rig-file sections owned by stimulus: images, display, fixation, selection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from contract.schema import Strict

# A colour channel in PsychoPy's rgb space.
Rgb = Annotated[float, Field(ge=-1.0, le=1.0)]


class ImagesConfig(Strict):
    """The image pools (stimulus/pools.py): where the images come from and how many.

    source = "photos" (the default) cuts patches from the photographs that ship
    with scikit-image. "folder" and "npy" use a lab's own stimulus set, one pool
    image per file (or per array entry): the held-out test set is chosen by file,
    every image is resized to size_px once and cached. Paths are relative to the
    directory cortexloop starts in and are stored absolute, so every process
    (and the session's rig.json) names the same files. Whether they exist is
    checked when the pools are built, not when the rig file is read: a stored
    session's rig must stay readable on a machine without its images.
    """

    size_px: int = Field(32, ge=8, le=512)
    colour: bool = True
    pool_size: int = Field(2000, ge=10, le=1_000_000)
    test_size: int = Field(200, ge=10, le=100_000)
    gaudy_share: float = Field(0.2, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    source: Literal["photos", "folder", "npy"] = "photos"
    # "folder": a folder of PNG, JPEG, TIFF, BMP, GIF or WebP files (not its subfolders);
    # "npy": a .npy array (N, H, W) or (N, H, W, 1 | 3 | 4), uint8 or float in [0, 1].
    path: str = ""
    # "folder": the held-out test files, by name or glob pattern ("test_*.png"); never used for training.
    test_files: tuple[Annotated[str, Field(min_length=1, max_length=1000)], ...] = Field((), max_length=10_000)
    # "npy": a second array holding the held-out test images.
    test_path: str = ""
    # When neither test_files nor test_path names the test set: this share of the files (or array entries),
    # chosen by seed, is held out. Unset: 0.2.
    test_share: float | None = Field(None, gt=0.0, lt=1.0)
    # How an image becomes size_px x size_px: "crop" its centred square (the short side), "stretch" the whole
    # image (the aspect ratio is not kept). Both resize with antialiasing.
    fit: Literal["crop", "stretch"] = "crop"
    # Where resized images are cached, keyed by the files' content and the resize settings.
    # "": $XDG_CACHE_HOME/cortexloop/images, i.e. ~/.cache/cortexloop/images.
    cache_dir: str = ""

    @field_validator("test_files", mode="before")
    @classmethod
    def _one_pattern_is_a_list(cls, v):
        return (v,) if isinstance(v, str) else v

    @field_validator("path", "test_path", "cache_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return str(Path(v).expanduser().absolute()) if v else v

    @model_validator(mode="after")
    def _source_keys(self) -> "ImagesConfig":
        own = {
            "path": self.path,
            "test_files": self.test_files,
            "test_path": self.test_path,
            "test_share": self.test_share,
        }
        if self.source == "photos":
            given = [k for k, v in own.items() if v]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only for source = 'folder' or 'npy' (source is 'photos', "
                    "the scikit-image photographs)"
                )
            return self
        if not self.path:
            raise ValueError(
                f"path: source = {self.source!r} needs a path "
                f"({'a folder of image files' if self.source == 'folder' else 'a .npy file'})"
            )
        if self.source == "folder" and self.test_path:
            raise ValueError("test_path: only for source = 'npy'; a folder names its test images with test_files")
        if self.source == "npy" and self.test_files:
            raise ValueError("test_files: only for source = 'folder'; an array's test images go in test_path")
        if self.test_share is not None and (self.test_files or self.test_path):
            raise ValueError(
                "test_share: the test set is already named by "
                f"{'test_files' if self.test_files else 'test_path'}; give one or the other"
            )
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every pool image."""
        return (self.size_px, self.size_px, 3 if self.colour else 1)


class DisplayConfig(Strict):
    """The stimulus screen and what is drawn on it (see docs/presentation.md).

    Monitor calibration: resolution_px, screen_width_cm (visible width of the
    image area) and viewing_distance_cm convert degrees to pixels; refresh_hz is
    what the rig's monitor runs at, and is checked against the measured rate when
    the window opens.
    """

    # "auto": PsychoPy when the session runs in real time and a window can be
    # opened on this machine's display, headless otherwise.
    presenter: Literal["auto", "psychopy", "headless"] = "auto"
    resolution_px: tuple[Annotated[int, Field(ge=64, le=16384)], Annotated[int, Field(ge=64, le=16384)]] = (1024, 768)
    refresh_hz: float = Field(60.0, ge=20.0, le=500.0)
    screen_width_cm: float = Field(40.0, gt=1.0, le=1000.0)
    viewing_distance_cm: float = Field(57.0, gt=1.0, le=1000.0)
    # Which physical screen the window opens on (0: the primary one).
    screen_index: int = Field(0, ge=0, le=16)
    # PsychoPy rgb space: -1 black, 0 mid grey, 1 white.
    background_rgb: tuple[Rgb, Rgb, Rgb] = (0.0, 0.0, 0.0)
    # Display gamma loaded into the graphics card's lookup table when the window
    # opens. None leaves the lookup table as the operating system has it (the
    # only choice under Xvfb, which has no lookup table).
    gamma: float | None = Field(None, gt=0.1, le=5.0)
    fullscreen: bool = False
    # "vsync": win.flip() waits for the vertical blank (a real monitor).
    # "software": the presenter paces flips with the clock (a display without
    # vsync, e.g. Xvfb). "auto": measure flip intervals at open and pick.
    frame_pacing: Literal["auto", "vsync", "software"] = "auto"
    # With vsync, the measured refresh rate must be within this fraction of
    # refresh_hz or the window refuses to open (durations are counted in frames).
    refresh_tolerance: float = Field(0.05, gt=0.0, le=0.5)
    image_size_deg: float = Field(4.0, gt=0.0, le=90.0)
    image_pos_deg: tuple[float, float] = (0.0, 0.0)
    # "nearest" shows each image pixel as a block of screen pixels, exactly the
    # values the models were given; "linear" smooths the upsampling.
    image_interpolation: Literal["nearest", "linear"] = "nearest"
    # Textures kept on the graphics card, by image hash (repeated images are not re-uploaded).
    texture_cache_images: int = Field(512, ge=16, le=100_000)
    # Mouse rigs without eye tracking usually turn the fixation point off.
    fixation_point: bool = True
    fixation_size_deg: float = Field(0.2, gt=0.0, le=5.0)
    fixation_pos_deg: tuple[float, float] = (0.0, 0.0)
    fixation_rgb: tuple[Rgb, Rgb, Rgb] = (1.0, -1.0, -1.0)
    # Draw the fixation point on top of the image when they overlap.
    fixation_over_image: bool = True
    photodiode_size_px: int = Field(40, ge=4, le=400)
    photodiode_corner: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = "bottom_right"

    @model_validator(mode="after")
    def _photodiode_fits(self) -> "DisplayConfig":
        if self.photodiode_size_px * 2 > min(self.resolution_px):
            raise ValueError("photodiode_size_px must be at most half the smaller screen dimension")
        return self


class FixationConfig(Strict):
    """Where "holding fixation" comes from (stimulus/fixation.py).

    "none": always held (anaesthetised or head-fixed mouse without eye tracking).
    "simulated": breaks at random, with break_probability per trial.
    "eyetracker": gaze samples from a tracker class the lab provides
    (tracker_class, "package.module:ClassName", constructed with no arguments),
    compared with a circular window around the fixation point.
    """

    source: Literal["simulated", "none", "eyetracker"] = "simulated"
    break_probability: float = Field(0.0, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    tracker_class: str = Field("", pattern=r"^$|^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    window_radius_deg: float = Field(1.5, gt=0.0, le=30.0)
    # Gaze lost (blink, pupil not found) for longer than this is a break.
    blink_grace_ms: float = Field(100.0, ge=0.0, le=2000.0)
    # A sample older than this counts as lost: a stalled tracker must not hold a trial.
    max_sample_age_ms: float = Field(50.0, gt=0.0, le=2000.0)

    @model_validator(mode="after")
    def _tracker_named(self) -> "FixationConfig":
        if self.source == "eyetracker" and not self.tracker_class:
            raise ValueError('source "eyetracker" needs tracker_class ("package.module:ClassName")')
        return self
