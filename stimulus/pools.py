"""Image pools: the training pool ("natural" and "gaudy" images) and the held-out test set.

Deterministic in the rig's [images] section, so every process builds the same pools (same order, same image
hashes) without shipping them. No test image shares a pixel with the training pool:

- source = "photos": patches of the scikit-image photographs. Each colour photograph is split into a
  training region and a held-out strip; test patches come from the strips and from grey photographs the
  training pool never uses, and every crop lies wholly inside its region.
- source = "folder" or "npy": a lab's own set, one image per file (or array entry), split by file. Resized
  images are cached on disk under a key of the files' content and the resize settings.

How the pools are built: docs/virtual-cortex.md; how selection draws on them: docs/image-selection.md.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from stimulus.config import ImagesConfig

# Natural colour photographs shipped with scikit-image (no download needed), split train / test by region.
COLOUR_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
# Whole images used only for training (textures, a synthetic colour wheel, a deep-field photograph).
TRAIN_ONLY_SOURCES = ("colorwheel", "hubble_deep_field", "brick", "grass", "gravel")
# Whole images used only for testing (grey photographs).
TEST_ONLY_SOURCES = ("camera", "coins", "moon", "page", "text", "clock", "horse")
HELD_OUT_FRACTION = 0.25  # of each colour photograph, as a strip along its long side
TEST_COLOUR_SHARE = 0.75  # of the test set cut from held-out colour strips (colour rigs)

# For callers that list sources: everything the training pool may draw from, and the test-only images.
TRAIN_SOURCES = COLOUR_SOURCES + TRAIN_ONLY_SOURCES
TEST_SOURCES = TEST_ONLY_SOURCES


@dataclass(frozen=True)
class Pools:
    """The pools of one rig: uint8 (n, H, W, C) images, the training pool's kinds and, for own sets, origins."""

    train: np.ndarray  # (P, H, W, C) uint8, the pool that selection and training draw from
    train_kind: tuple  # "natural" or "gaudy", per train image
    test: np.ndarray  # (T, H, W, C) uint8, held out: never shown for training
    # Own image sets: the file (or "array.npy[i]") each image came from. Empty for the scikit-image photographs.
    train_origin: tuple = ()
    test_origin: tuple = ()


@lru_cache(maxsize=None)
def _source(name: str) -> np.ndarray | None:
    loader = getattr(skdata, name, None)
    if loader is None:
        return None
    try:
        img = loader()
    except Exception:  # a loader that needs an optional download: skip it
        return None
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:  # binary images (e.g. 'horse'): bool has no subtraction
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)).astype(np.uint8)
    img.setflags(write=False)
    return img


def split_regions(img: np.ndarray, held_out: float = HELD_OUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(training region, held-out strip) of one photograph: disjoint views, the strip along the long side's end."""
    h, w = img.shape[:2]
    if w >= h:
        cut = int(round(w * (1 - held_out)))
        return img[:, :cut], img[:, cut:]
    cut = int(round(h * (1 - held_out)))
    return img[:cut], img[cut:]


def gaudy(images: np.ndarray) -> np.ndarray:
    """Each colour channel binarized at its mean (per image), as in Cowley et al."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.where(x > mean, 255, 0).astype(np.uint8)


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) float32, antialiased (area-like) bilinear: fast enough for
    thousands of crops at start-up in every process."""
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).numpy()


def cut_patches(sources: list[np.ndarray], n: int, size: int, colour: bool, rng: np.random.Generator) -> np.ndarray:
    """n square crops, each wholly inside one of `sources`, resized to size x size."""
    out = np.zeros((n, size, size, 3 if colour else 1), np.uint8)
    for i in range(n):
        src = sources[rng.integers(len(sources))]
        h, w = src.shape[:2]
        short = min(h, w)
        lo = max(8, min(short, max(16, max(h, w) // 8)))
        hi = max(lo, min(short, max(h, w) // 2))
        side = int(rng.integers(lo, hi + 1))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = _resize(src[y : y + side, x : x + side], size)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if not colour:
            crop = crop @ np.array([0.299, 0.587, 0.114], np.float32)
            crop = crop[..., None]
        out[i] = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
    return out


def source_regions() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(training regions, held-out colour strips, test-only grey images), skipping unavailable images."""
    train, held_colour, test_grey = [], [], []
    for name in COLOUR_SOURCES:
        img = _source(name)
        if img is not None:
            a, b = split_regions(img)
            train.append(a)
            held_colour.append(b)
    train += [s for s in (_source(n) for n in TRAIN_ONLY_SOURCES) if s is not None]
    test_grey += [s for s in (_source(n) for n in TEST_ONLY_SOURCES) if s is not None]
    return train, held_colour, test_grey


@lru_cache(maxsize=4)
def make_pools(cfg: ImagesConfig) -> Pools:
    """The pools the rig's [images] section describes. Own image sets raise ImageSourceError naming the file
    and why when they cannot be used."""
    if cfg.source == "photos":
        return photo_pools(cfg)
    return own_pools(cfg)


def photo_pools(cfg: ImagesConfig) -> Pools:
    """Patches cut from the scikit-image photographs (source = "photos")."""
    rng = np.random.default_rng(cfg.seed)
    train_src, held_colour, test_grey = source_regions()
    n_gaudy = int(round(cfg.pool_size * cfg.gaudy_share))
    natural = cut_patches(train_src, cfg.pool_size - n_gaudy, cfg.size_px, cfg.colour, rng)
    gaudy_imgs = gaudy(cut_patches(train_src, n_gaudy, cfg.size_px, cfg.colour, rng))
    colour_share = TEST_COLOUR_SHARE if cfg.colour else 0.5
    n_colour = int(round(cfg.test_size * colour_share)) if held_colour else 0
    parts = [cut_patches(held_colour, n_colour, cfg.size_px, cfg.colour, rng)] if n_colour else []
    if cfg.test_size - n_colour:
        parts.append(cut_patches(test_grey or held_colour, cfg.test_size - n_colour, cfg.size_px, cfg.colour, rng))
    test = np.concatenate(parts)
    # Interleave colour and grey test patches so any prefix of the test set has both.
    test = test[np.random.default_rng(cfg.seed + 1).permutation(len(test))]
    kinds = ("natural",) * len(natural) + ("gaudy",) * n_gaudy
    return Pools(np.concatenate([natural, gaudy_imgs]), kinds, test)


# ---- a lab's own stimulus set: a folder of image files or a .npy array ----

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
DEFAULT_TEST_SHARE = 0.2
# Bump when the resizing or decoding changes, so no process reads images cached by the old code.
CACHE_FORMAT = 1
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as cut_patches uses


class ImageSourceError(ValueError):
    """An own image set that cannot be used; the message names the file (or rig key) and why."""


@dataclass(frozen=True)
class ImageSet:
    """Resized images of one source file set, in a fixed order, with the name each came from."""

    names: tuple  # file names (folder) or "array.npy[i]" (npy), in image order
    images: np.ndarray  # (N, size_px, size_px, C) uint8


def own_pools(cfg: ImagesConfig) -> Pools:
    """One pool image per training file (natural, and gaudy versions of others), one test image per test file.

    Which files go into the pools, when there are more than asked for, is drawn by seed; the chosen ones keep
    the order of their sorted file names, so the pools are the same in every process."""
    train, test = own_image_sets(cfg)
    where = cfg.path
    n_gaudy = int(round(cfg.pool_size * cfg.gaudy_share))
    n_natural = cfg.pool_size - n_gaudy
    n_train = len(train.names)
    if max(n_natural, n_gaudy) > n_train:
        fix = f"set pool_size to at most {_largest_pool(n_train, cfg.gaudy_share)} or add training images"
        raise ImageSourceError(
            f"{where}: images.pool_size: {n_train} training images, but pool_size {cfg.pool_size} with gaudy_share "
            f"{cfg.gaudy_share} asks for {n_natural} natural and {n_gaudy} gaudy images (each from a different "
            f"training image); {fix}"
        )
    if cfg.test_size > len(test.names):
        raise ImageSourceError(
            f"{where}: images.test_size: {len(test.names)} test images ({_test_rule(cfg)}), but test_size asks "
            f"for {cfg.test_size}; set test_size to at most {len(test.names)} or hold out more files"
        )
    rng = np.random.default_rng(cfg.seed)
    natural = np.sort(rng.choice(n_train, n_natural, replace=False))
    gaudy_from = np.sort(rng.choice(n_train, n_gaudy, replace=False))
    test_idx = np.sort(rng.choice(len(test.names), cfg.test_size, replace=False))
    pool = np.concatenate([train.images[natural], gaudy(train.images[gaudy_from])])
    kinds = ("natural",) * n_natural + ("gaudy",) * n_gaudy
    origin = tuple(train.names[i] for i in natural) + tuple(train.names[i] for i in gaudy_from)
    return Pools(pool, kinds, test.images[test_idx], origin, tuple(test.names[i] for i in test_idx))


def _largest_pool(n_train: int, gaudy_share: float) -> int:
    p = n_train if gaudy_share in (0.0, 1.0) else int(n_train / max(gaudy_share, 1 - gaudy_share)) + 1
    while p > 0 and max(p - round(p * gaudy_share), round(p * gaudy_share)) > n_train:
        p -= 1
    return p


def _test_rule(cfg: ImagesConfig) -> str:
    if cfg.test_files:
        return "the files test_files names"
    if cfg.test_path:
        return f"the entries of {cfg.test_path}"
    return f"test_share {cfg.test_share or DEFAULT_TEST_SHARE} of the files"


def own_image_sets(cfg: ImagesConfig) -> tuple[ImageSet, ImageSet]:
    """(training images, held-out test images), split by file, each resized and cached."""
    if cfg.source == "folder":
        files = folder_files(Path(cfg.path))
        is_test = _test_mask_by_name(cfg, tuple(f.name for f in files))  # before decoding: a wrong name fails fast
        everything = cached_image_set(cfg, files, kind="folder")
    elif cfg.source == "npy":
        everything = cached_image_set(cfg, [_existing_file(Path(cfg.path), "path")], kind="npy")
        if cfg.test_path:
            test = cached_image_set(cfg, [_existing_file(Path(cfg.test_path), "test_path")], kind="npy")
            _refuse_shared_images(everything, test)
            return everything, test
        is_test = _test_mask_by_share(cfg, len(everything.names), cfg.path)
    else:
        raise ValueError(f"images.source {cfg.source!r} is not an own image set")
    train = ImageSet(tuple(n for n, t in zip(everything.names, is_test) if not t), everything.images[~is_test])
    test = ImageSet(tuple(n for n, t in zip(everything.names, is_test) if t), everything.images[is_test])
    _refuse_shared_images(train, test)
    return train, test


def _existing_file(path: Path, key: str) -> Path:
    if not path.exists():
        raise ImageSourceError(f"{path}: images.{key}: no such file")
    if not path.is_file():
        raise ImageSourceError(
            f"{path}: images.{key}: not a file (source = 'npy' needs a .npy array; "
            "for a folder of images use source = 'folder')"
        )
    return path


def folder_files(folder: Path) -> list[Path]:
    """The folder's image files (by suffix, hidden files skipped), sorted by name: the same order everywhere."""
    if not folder.exists():
        raise ImageSourceError(f"{folder}: images.path: no such folder")
    if not folder.is_dir():
        raise ImageSourceError(
            f"{folder}: images.path: not a folder (source = 'folder' needs a folder of image "
            "files; for a .npy array use source = 'npy')"
        )
    entries = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [folder / n for n in entries if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        others = f"; it holds {len(entries)} other file(s), e.g. {entries[0]!r}" if entries else "; it is empty"
        raise ImageSourceError(
            f"{folder}: images.path: no image files (looked for {', '.join(IMAGE_SUFFIXES)}){others}"
        )
    return images


def _test_mask_by_name(cfg: ImagesConfig, names: tuple) -> np.ndarray:
    if not cfg.test_files:
        return _test_mask_by_share(cfg, len(names), cfg.path)
    is_test = np.zeros(len(names), bool)
    for pattern in cfg.test_files:
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ImageSourceError(
                f"{cfg.path}: images.test_files: {pattern!r} is not an image file in the folder "
                f"(nor a pattern matching one; it has {len(names)}: {shown})"
            )
        is_test[hits] = True
    if is_test.all():
        raise ImageSourceError(
            f"{cfg.path}: images.test_files: every image file is a test file; none is left for training"
        )
    return is_test


def _test_mask_by_share(cfg: ImagesConfig, n: int, where: str) -> np.ndarray:
    """A share of the files, chosen by seed (its own stream, so pool draws do not change the split)."""
    share = cfg.test_share or DEFAULT_TEST_SHARE
    n_test = int(round(share * n))
    if n_test < 1 or n_test >= n:
        raise ImageSourceError(
            f"{where}: images.test_share: {share} of {n} image(s) holds out {n_test}; the test "
            "set and the training pool each need at least one"
        )
    is_test = np.zeros(n, bool)
    is_test[np.random.default_rng([cfg.seed, 1]).permutation(n)[:n_test]] = True
    return is_test


def _refuse_shared_images(train: ImageSet, test: ImageSet) -> None:
    """A test image identical to a training image (the same file saved twice) would not be held out."""
    from contract.images import image_hash

    seen = {image_hash(im): name for name, im in zip(train.names, train.images)}
    for name, im in zip(test.names, test.images):
        if image_hash(im) in seen:
            raise ImageSourceError(
                f"{name}: test image identical (after resizing) to the training image "
                f"{seen[image_hash(im)]}; a held-out image must not also be a training image"
            )


# ---- decoding and resizing ----


def decode_image_file(path: Path) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels of an image file, upright (EXIF rotation applied), alpha dropped,
    16-bit grey scaled to 8 bits. Multi-frame files (GIF, TIFF stacks) give their first frame."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # cameras store the rotation in EXIF rather than in the pixels
            if im.mode in ("1", "L", "LA"):
                return np.asarray(im.convert("L"))
            if im.mode.startswith("I"):  # 16-bit grey ("I;16", or "I" for 16-bit PNGs): the full range is 65535
                wide = np.asarray(im, dtype=np.float64)
                return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
            if im.mode == "F":
                raise ImageSourceError(f"{path}: 32-bit float pixels; save the image with 8- or 16-bit pixels")
            return np.asarray(im.convert("RGB"))
    except ImageSourceError:
        raise
    except Exception as err:  # Pillow raises many kinds (UnidentifiedImageError, OSError for truncated files, ...)
        raise ImageSourceError(f"{path}: cannot be read as an image ({type(err).__name__}: {err})") from None


def load_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, memory-mapped, checked: (N, H, W) or (N, H, W, 1 | 3 | 4), uint8 or float in
    [0, 1]."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise ImageSourceError(f"{path}: cannot be read ({err.strerror or err})") from None
    if magic.startswith(b"PK"):  # a zip: what numpy.savez writes
        raise ImageSourceError(f"{path}: an .npz archive, not one array; save the images with numpy.save")
    if magic != b"\x93NUMPY":
        raise ImageSourceError(f"{path}: not a .npy array (it does not start as numpy.save's files do)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        why = (
            "it holds Python objects (a pickle); save a numeric array"
            if "pickle" in str(err) or "Python objects" in str(err)
            else f"not a .npy array ({err})"
        )
        raise ImageSourceError(f"{path}: {why}") from None
    except Exception as err:
        raise ImageSourceError(f"{path}: cannot be read as a .npy array ({type(err).__name__}: {err})") from None
    shape_ok = arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] in (1, 3, 4))
    if not shape_ok:
        hint = (
            " (channels first? numpy.moveaxis(a, 1, -1) puts them last)"
            if arr.ndim == 4 and arr.shape[1] in (1, 3, 4)
            else ""
        )
        raise ImageSourceError(
            f"{path}: shape {arr.shape}: expected (N, H, W) grey or (N, H, W, C) with C 1, 3 or "
            f"4 (alpha is dropped){hint}"
        )
    if arr.shape[0] == 0 or min(arr.shape[1:3]) == 0:
        raise ImageSourceError(f"{path}: shape {arr.shape}: no images")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
            raise ImageSourceError(
                f"{path}: dtype {arr.dtype} with values from {lo} to {hi}: float images must lie "
                "in [0, 1] (or save them as uint8, 0 to 255)"
            )
        return arr
    raise ImageSourceError(f"{path}: dtype {arr.dtype}: expected uint8 (0 to 255) or float in [0, 1]")


def resize_image(pixels: np.ndarray, cfg: ImagesConfig) -> np.ndarray:
    """One image, (H, W) or (H, W, C) uint8 or float in [0, 1], to (size_px, size_px, 3 or 1) uint8: the centred
    square ("crop") or the whole image ("stretch"), resized with antialiasing, then converted to the rig's colour."""
    x = np.asarray(pixels)
    scale = 255.0 if np.issubdtype(x.dtype, np.floating) else 1.0
    if x.ndim == 2:
        x = x[..., None]
    x = x[..., :3]  # alpha dropped
    if cfg.fit == "crop":
        h, w = x.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        x = x[y0 : y0 + side, x0 : x0 + side]
    out = _resize(np.asarray(x, np.float32) * scale, cfg.size_px)
    if cfg.colour and out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif not cfg.colour and out.shape[-1] == 3:
        out = (out @ LUMINANCE)[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---- the cache: resized images keyed by the files' content and the resize settings ----


def cache_root(cfg: ImagesConfig) -> Path:
    """The rig's cache_dir, or the user's cache folder: writable even when the images are on a read-only share,
    and it does not add files to the lab's stimulus folder."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cortexloop" / "images"


def _file_digest(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as err:
        raise ImageSourceError(f"{path}: cannot be read ({err.strerror or err})") from None


def cache_key(cfg: ImagesConfig, files: list[Path], kind: str) -> str:
    """SHA-256 over the resize settings and every file's name and content: a changed, added, removed or renamed
    file, or another size_px, colour or fit, is another key. Where the files lie is not part of it."""
    h = hashlib.sha256()
    settings = dict(format=CACHE_FORMAT, kind=kind, size_px=cfg.size_px, colour=cfg.colour, fit=cfg.fit)
    h.update(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        h.update(f"\0{f.name}\0{_file_digest(f)}".encode())
    return h.hexdigest()[:32]


def decode_and_resize(cfg: ImagesConfig, files: list[Path], kind: str) -> ImageSet:
    """Every image of the files, resized: one per image file (folder), one per array entry (npy)."""
    if kind == "folder":
        images = [resize_image(decode_image_file(f), cfg) for f in files]
        return ImageSet(tuple(f.name for f in files), np.stack(images))
    (path,) = files
    arr = load_npy(path)
    images = np.stack([resize_image(arr[i], cfg) for i in range(len(arr))])
    return ImageSet(tuple(f"{path.name}[{i}]" for i in range(len(arr))), images)


def cached_image_set(cfg: ImagesConfig, files: list[Path], kind: str) -> ImageSet:
    """decode_and_resize through the on-disk cache. Processes starting together take turns (a file lock), so one
    decodes and the others read its result. A cache that cannot be written is warned about, not fatal."""
    key = cache_key(cfg, files, kind)
    root = cache_root(cfg)
    entry = root / f"{key}.npz"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "a+b")
    except OSError as err:
        warnings.warn(f"{root}: image cache not usable ({err.strerror or err}); decoding the images in every process")
        return decode_and_resize(cfg, files, kind)
    with lock:
        _lock(lock)
        cached = _read_cache(entry, cfg)
        if cached is not None:
            return cached
        fresh = decode_and_resize(cfg, files, kind)
        _write_cache(entry, fresh)
        return fresh


def _lock(f) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, processes may decode at the same time (still correct)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed


def _read_cache(entry: Path, cfg: ImagesConfig) -> ImageSet | None:
    if not entry.exists():
        return None
    try:
        with np.load(entry, allow_pickle=False) as z:
            names, images = tuple(str(n) for n in z["names"]), z["images"]
    except Exception as err:  # a damaged entry is rebuilt, not trusted
        warnings.warn(f"{entry}: damaged image cache entry ({type(err).__name__}); decoding the images again")
        return None
    shape = (len(names), *cfg.shape)
    if images.shape != shape or images.dtype != np.uint8:
        warnings.warn(f"{entry}: image cache entry has shape {images.shape}, expected {shape}; decoding again")
        return None
    return ImageSet(names, images)


def _write_cache(entry: Path, images: ImageSet) -> None:
    """Written beside and renamed into place: a reader never sees half a file."""
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    try:
        buf = io.BytesIO()
        np.savez(buf, names=np.array(images.names, dtype=str), images=images.images)
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, entry)
    except OSError as err:
        warnings.warn(f"{entry}: image cache not written ({err.strerror or err})")
        tmp.unlink(missing_ok=True)
