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

    size_px: int = Field(
        32, ge=8, le=512, description="Side of every pool image, in pixels (images are square); the models' input."
    )
    colour: bool = Field(True, description="Colour images (3 channels); false: grey (1 channel).")
    pool_size: int = Field(
        2000, ge=10, le=1_000_000, description="Images in the training pool the session chooses from."
    )
    test_size: int = Field(
        200, ge=10, le=100_000, description="Held-out natural test images: never shown, used to score the models."
    )
    gaudy_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Share of the pool that is gaudy images (each colour channel of a natural image binarized at its "
        "mean).",
    )
    seed: int = Field(0, ge=0, description="Seed of the pool: which patches or files, which test images.")
    source: Literal["photos", "folder", "npy"] = Field(
        "photos",
        description='"photos": patches of scikit-image\'s photographs; "folder": a folder of image files; "npy": a '
        ".npy array.",
    )
    path: str = Field(
        "",
        description='"folder": a folder of PNG, JPEG, TIFF, BMP, GIF or WebP files (not its subfolders); "npy": a '
        ".npy array (N, H, W) or (N, H, W, 1 | 3 | 4), uint8 or float in [0, 1].",
    )
    test_files: tuple[Annotated[str, Field(min_length=1, max_length=1000)], ...] = Field(
        (),
        max_length=10_000,
        description='"folder": the held-out test files, by name or glob pattern ("test_*.png"); never used for '
        "training.",
    )
    test_path: str = Field("", description='"npy": a second array holding the held-out test images.')
    test_share: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Where neither test_files nor test_path names the test set: this share of the files (or array "
        "entries), chosen by seed, is held out (unset: 0.2).",
    )
    fit: Literal["crop", "stretch"] = Field(
        "crop",
        description='How an image becomes size_px x size_px: "crop" its centred square, "stretch" the whole image '
        "(aspect ratio not kept); both antialiased.",
    )
    cache_dir: str = Field(
        "",
        description="Where resized images are cached, keyed by the files' content and the resize settings "
        '("": $XDG_CACHE_HOME/cortexloop/images, i.e. ~/.cache/cortexloop/images).',
    )

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

    presenter: Literal["auto", "psychopy", "headless"] = Field(
        "auto",
        description='"psychopy": a PsychoPy window; "headless": no window; "auto": PsychoPy when the session runs in '
        "real time and a window can be opened on this machine's display, headless otherwise.",
    )
    resolution_px: tuple[Annotated[int, Field(ge=64, le=16384)], Annotated[int, Field(ge=64, le=16384)]] = Field(
        (1024, 768), description="The screen's resolution, [width, height] in pixels."
    )
    refresh_hz: float = Field(
        60.0,
        ge=20.0,
        le=500.0,
        description="The monitor's refresh rate, in Hz: trial durations are whole frames of it.",
    )
    screen_width_cm: float = Field(
        40.0, gt=1.0, le=1000.0, description="Visible width of the screen's image area, in cm."
    )
    viewing_distance_cm: float = Field(57.0, gt=1.0, le=1000.0, description="Eye to screen, in cm.")
    screen_index: int = Field(0, ge=0, le=16, description="Which physical screen the window opens on (0: the primary).")
    background_rgb: tuple[Rgb, Rgb, Rgb] = Field(
        (0.0, 0.0, 0.0), description="Background colour in PsychoPy rgb space: -1 black, 0 mid grey, 1 white."
    )
    gamma: float | None = Field(
        None,
        gt=0.1,
        le=5.0,
        description="Display gamma loaded into the graphics card's lookup table when the window opens (unset: the "
        "table is left as the operating system has it; the only choice under Xvfb).",
    )
    fullscreen: bool = Field(False, description="Open the window fullscreen.")
    frame_pacing: Literal["auto", "vsync", "software"] = Field(
        "auto",
        description='"vsync": each flip waits for the vertical blank (a real monitor); "software": the presenter '
        'paces flips with the clock (a display without vsync, e.g. Xvfb); "auto": measured at open.',
    )
    refresh_tolerance: float = Field(
        0.05,
        gt=0.0,
        le=0.5,
        description="With vsync, the measured refresh rate must be within this fraction of refresh_hz or the window "
        "refuses to open.",
    )
    image_size_deg: float = Field(4.0, gt=0.0, le=90.0, description="Side of the image on screen, in degrees.")
    image_pos_deg: tuple[float, float] = Field(
        (0.0, 0.0), description="Centre of the image, [x, y] in degrees from the screen's centre."
    )
    image_interpolation: Literal["nearest", "linear"] = Field(
        "nearest",
        description='"nearest": each image pixel a block of screen pixels, exactly the values the models were given; '
        '"linear": smoothed upsampling.',
    )
    texture_cache_images: int = Field(
        512,
        ge=16,
        le=100_000,
        description="Textures kept on the graphics card, by image hash, so repeated images are not uploaded again.",
    )
    fixation_point: bool = Field(True, description="Draw the fixation point.")
    fixation_size_deg: float = Field(0.2, gt=0.0, le=5.0, description="Diameter of the fixation point, in degrees.")
    fixation_pos_deg: tuple[float, float] = Field(
        (0.0, 0.0), description="Position of the fixation point, [x, y] in degrees from the screen's centre."
    )
    fixation_rgb: tuple[Rgb, Rgb, Rgb] = Field(
        (1.0, -1.0, -1.0), description="Colour of the fixation point in PsychoPy rgb space (-1 to 1)."
    )
    fixation_over_image: bool = Field(
        True, description="Draw the fixation point on top of the image where they overlap."
    )
    photodiode_size_px: int = Field(
        40,
        ge=4,
        le=400,
        description="Side of the corner patch the photodiode watches, in pixels; at most half the smaller screen "
        "dimension.",
    )
    photodiode_corner: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = Field(
        "bottom_right", description="The screen corner of the photodiode patch."
    )

    @model_validator(mode="after")
    def _image_on_screen(self) -> "DisplayConfig":
        """The image, image_size_deg wide at image_pos_deg, lies on the screen (edges by the tangent, as
        stimulus/presenters/geometry.py draws them)."""
        import math

        half_cm = (
            self.screen_width_cm / 2,
            self.screen_width_cm * self.resolution_px[1] / self.resolution_px[0] / 2,
        )
        for axis, (centre, half) in enumerate(zip(self.image_pos_deg, half_cm)):
            reach = abs(centre) + self.image_size_deg / 2
            screen_deg = math.degrees(math.atan(half / self.viewing_distance_cm))
            if reach >= 90 or self.viewing_distance_cm * math.tan(math.radians(reach)) > half * 1.001:
                raise ValueError(
                    f"image_size_deg = {self.image_size_deg:g} at image_pos_deg = {list(self.image_pos_deg)} runs "
                    f"off the screen: its {'width' if axis == 0 else 'height'} spans {2 * screen_deg:.1f} deg "
                    f"(screen_width_cm, resolution_px, viewing_distance_cm), so the image reaches at most "
                    f"{screen_deg:.1f} deg from the centre, not {reach:g}"
                )
        return self

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

    source: Literal["simulated", "none", "eyetracker"] = Field(
        "simulated",
        description='"none": always held; "simulated": breaks at random (break_probability); "eyetracker": gaze '
        "samples from tracker_class.",
    )
    break_probability: float = Field(
        0.0, ge=0.0, le=1.0, description='source "simulated": probability that a trial\'s fixation breaks.'
    )
    seed: int = Field(0, ge=0, description='source "simulated": seed of the breaks.')
    tracker_class: str = Field(
        "",
        pattern=r"^$|^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description='source "eyetracker": the lab\'s tracker class, "package.module:ClassName", constructed with no '
        "arguments.",
    )
    window_radius_deg: float = Field(
        1.5,
        gt=0.0,
        le=30.0,
        description="Radius of the fixation window around the fixation point, in degrees.",
    )
    blink_grace_ms: float = Field(
        100.0,
        ge=0.0,
        le=2000.0,
        description="Gaze lost (a blink, the pupil not found) for longer than this (ms) is a break.",
    )
    max_sample_age_ms: float = Field(
        50.0,
        gt=0.0,
        le=2000.0,
        description="A gaze sample older than this (ms) counts as lost, so a stalled tracker cannot hold a trial.",
    )

    @model_validator(mode="after")
    def _tracker_named(self) -> "FixationConfig":
        if self.source == "eyetracker" and not self.tracker_class:
            raise ValueError('source "eyetracker" needs tracker_class ("package.module:ClassName")')
        return self
