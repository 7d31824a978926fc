"""Image pools: sizes, determinism, gaudy images, and a held-out test set that has colour and shares no pixels."""

import numpy as np

from stimulus.config import ImagesConfig
from stimulus.pools import COLOUR_SOURCES, HELD_OUT_FRACTION, _source, gaudy, make_pools, source_regions, split_regions


def colourful(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    return np.abs(x - x.mean(-1, keepdims=True)).mean((1, 2, 3)) > 5


def test_pool_shapes_kinds_and_determinism():
    cfg = ImagesConfig(size_px=24, pool_size=120, test_size=40, gaudy_share=0.25, seed=3)
    p = make_pools(cfg)
    assert p.train.shape == (120, 24, 24, 3) and p.test.shape == (40, 24, 24, 3)
    assert p.train.dtype == np.uint8 and p.train_kind.count("gaudy") == 30
    gaudy_imgs = p.train[np.array(p.train_kind) == "gaudy"]
    assert set(np.unique(gaudy_imgs)) <= {0, 255}
    make_pools.cache_clear()
    q = make_pools(cfg)
    assert np.array_equal(p.train, q.train) and np.array_equal(p.test, q.test)
    other = make_pools(cfg.model_copy(update={"seed": 4}))
    assert not np.array_equal(p.train, other.train)


def test_test_set_has_colour_natural_images():
    p = make_pools(ImagesConfig(size_px=32, pool_size=50, test_size=100, seed=0))
    assert colourful(p.test).mean() > 0.4  # held-out strips of colour photographs
    assert (~colourful(p.test)).mean() > 0.1  # and grey photographs the training pool never uses


def test_held_out_strips_share_no_pixels_with_training_regions():
    tested = 0
    for name in COLOUR_SOURCES:
        img = _source(name)
        if img is None:
            continue
        h, w = img.shape[:2]
        train, held = split_regions(img)
        # Exact check (not the bounds heuristic of np.may_share_memory): no element of one view is in the other.
        assert not np.shares_memory(train, held), name
        # The same split of an image of pixel numbers: every pixel is in exactly one region.
        pixel_ids = np.arange(h * w).reshape(h, w)
        ids_train, ids_held = split_regions(pixel_ids)
        assert np.intersect1d(ids_train, ids_held).size == 0, name
        assert np.array_equal(np.union1d(ids_train, ids_held), pixel_ids.ravel()), name
        # The strip is the held-out fraction of the long side, along the whole short side.
        long_side, short_side = max(h, w), min(h, w)
        strip = held.shape[1] if w >= h else held.shape[0]
        assert held.shape[1 if w < h else 0] == short_side, name
        assert abs(strip - HELD_OUT_FRACTION * long_side) <= 0.5, (name, strip, long_side)
        # The regions tile the image: the strip is what the training region leaves out, at the long side's end.
        if w >= h:
            assert np.array_equal(np.concatenate([train, held], 1), img)
        else:
            assert np.array_equal(np.concatenate([train, held], 0), img)
        tested += 1
    assert tested >= 3  # scikit-image ships these photographs; a check over none would prove nothing


def test_test_patches_come_only_from_held_out_strips_and_test_only_images():
    train_regions, held_colour, test_grey = source_regions()
    assert len(held_colour) >= 3 and len(test_grey) >= 3
    for held in held_colour + test_grey:
        for train in train_regions:
            assert not np.shares_memory(held, train)


def test_grey_rig_pools_have_one_channel():
    p = make_pools(ImagesConfig(size_px=16, colour=False, pool_size=20, test_size=10))
    assert p.train.shape == (20, 16, 16, 1) and p.test.shape == (10, 16, 16, 1)


def test_gaudy_binarizes_each_channel_at_its_mean():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    x[0, :2, :, 0] = 200  # red: top half bright, channel mean 100
    x[0, :, :2, 2] = 30  # blue: left half at 30, above its channel mean 15 but below the image's mean 38
    x[1, :, :, 0] = 10  # a dim second image: its own mean decides, not the batch's
    x[1, 3, 3, 0] = 20
    g = gaudy(x)
    assert g.dtype == np.uint8 and g.shape == x.shape
    top_half, left_half, corner = (np.zeros((4, 4), np.uint8) for _ in range(3))
    top_half[:2], left_half[:, :2], corner[3, 3] = 255, 255, 255
    assert np.array_equal(g[0, :, :, 0], top_half)
    assert np.array_equal(g[0, :, :, 2], left_half)  # each channel's own mean
    assert np.all(g[0, :, :, 1] == 0)  # a flat channel stays dark
    assert np.array_equal(g[1, :, :, 0], corner)  # each image's own mean


# ---- the default source is unchanged: the scikit-image photographs give the same pools, image for image ----


def pools_digest(p) -> str:
    """One digest over every pool image's hash (stimulus.images.image_hash, the key every process and the session
    store use), in pool order, and the train kinds."""
    import hashlib

    from contract.images import image_hash

    h = hashlib.sha256()
    for images in (p.train, p.test):
        for im in images:
            h.update(image_hash(im).encode())
    h.update(repr(p.train_kind).encode())
    return h.hexdigest()[:16]


# Recorded from the pools as they were before the rig file could name other image sources (scikit-image 0.26,
# torch 2.13 CPU). If one changes, every stored session's image hashes stop matching a rebuilt pool.
PHOTO_POOL_DIGESTS = [
    (dict(size_px=32, colour=True, pool_size=2000, test_size=200, gaudy_share=0.2, seed=1), "4974468916ba423c"),
    (dict(size_px=24, colour=True, pool_size=120, test_size=40, gaudy_share=0.25, seed=3), "bd9a5eac728ebc5e"),
    (dict(size_px=16, colour=False, pool_size=20, test_size=10, gaudy_share=0.2, seed=0), "9f1145ac63ad72b3"),
]


def test_default_photo_pools_are_unchanged():
    from pathlib import Path

    from controller.config import load_rig

    sim = load_rig(Path(__file__).resolve().parents[2] / "rigs" / "sim.toml").images
    assert sim.source == "photos" and ImagesConfig().source == "photos"  # still the default
    assert sim.model_dump(include=set(PHOTO_POOL_DIGESTS[0][0])) == PHOTO_POOL_DIGESTS[0][0]  # the default rig
    for keys, digest in PHOTO_POOL_DIGESTS:
        assert pools_digest(make_pools(ImagesConfig(**keys))) == digest, keys


# ---- a lab's own images: a folder of files or a .npy array ----

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import stimulus.pools as pools  # noqa: E402
from contract.images import image_hash  # noqa: E402
from stimulus.pools import ImageSourceError, decode_image_file, resize_image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def write_lab_folder(folder: Path, n_train: int = 12, n_test: int = 6) -> tuple[list[str], list[str]]:
    """Image files as a lab has them: colour and grey, RGBA, 16-bit grey, JPEG, all of different sizes.
    Returns (training names, test names); test files are named test_*."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    names = []
    for i in range(n_train + n_test):
        h, w = 20 + (7 * i) % 60, 90 - (13 * i) % 60  # landscape and portrait, mostly not square
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        stem = f"test_{i:02d}" if i >= n_train else f"img_{i:02d}"
        kind = i % 5
        if kind == 0:
            name, img = f"{stem}.png", Image.fromarray(rgb)
        elif kind == 1:
            name, img = f"{stem}.png", Image.fromarray(rgb[..., 0])  # 8-bit grey
        elif kind == 2:
            name, img = f"{stem}.png", Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w), np.uint8)]))
        elif kind == 3:
            name, img = f"{stem}.jpg", Image.fromarray(rgb)
        else:
            name = f"{stem}.png"
            img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))  # 16-bit grey
        img.save(folder / name)
        names.append(name)
    (folder / "notes.txt").write_text("not an image: skipped")
    return names[:n_train], names[n_train:]


def own(tmp_path, **keys) -> ImagesConfig:
    base = dict(
        source="folder",
        path=str(tmp_path / "lab"),
        size_px=16,
        pool_size=10,
        test_size=10,
        gaudy_share=0.2,
        cache_dir=str(tmp_path / "cache"),
    )
    return ImagesConfig(**{**base, **keys})


@pytest.fixture(autouse=True)
def fresh_pools():
    """make_pools keeps pools per config in memory; these tests build from files that change between builds."""
    make_pools.cache_clear()
    yield
    make_pools.cache_clear()


def count_decodes(monkeypatch) -> list:
    calls = []
    real = pools.decode_image_file

    def counted(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(pools, "decode_image_file", counted)
    return calls


def test_folder_pools_one_image_per_file_test_set_by_file(tmp_path):
    train_names, test_names = write_lab_folder(tmp_path / "lab", n_train=12, n_test=10)
    cfg = own(tmp_path, test_files=["test_*"], pool_size=12, gaudy_share=0.25)
    p = make_pools(cfg)
    assert p.train.shape == (12, 16, 16, 3) and p.test.shape == (10, 16, 16, 3) and p.train.dtype == np.uint8
    assert p.train_kind.count("natural") == 9 and p.train_kind.count("gaudy") == 3
    # Sorted file order; natural images are whole files (not crops), each file at most once per kind.
    natural_names = [n for n, k in zip(p.train_origin, p.train_kind) if k == "natural"]
    assert natural_names == sorted(set(natural_names)) and set(natural_names) <= set(train_names)
    assert list(p.test_origin) == sorted(test_names)
    # Every test image is its own test file, resized; no training image comes from a test file.
    for name, img in zip(p.test_origin, p.test):
        assert np.array_equal(img, resize_image(decode_image_file(tmp_path / "lab" / name), cfg)), name
    assert not set(p.train_origin) & set(test_names)
    for name, kind, img in zip(p.train_origin, p.train_kind, p.train):  # natural: the file; gaudy: its gaudy version
        expected = resize_image(decode_image_file(tmp_path / "lab" / name), cfg)
        assert np.array_equal(img, expected if kind == "natural" else gaudy(expected[None])[0]), (name, kind)
    train_hashes = {image_hash(im) for im in p.train}
    assert not train_hashes & {image_hash(im) for im in p.test}
    gaudy_imgs = p.train[np.array(p.train_kind) == "gaudy"]
    assert set(np.unique(gaudy_imgs)) <= {0, 255}


def test_folder_decoding_grey_colour_alpha_and_16_bit(tmp_path):
    write_lab_folder(tmp_path / "lab", n_train=10, n_test=0)
    lab = tmp_path / "lab"
    assert decode_image_file(lab / "img_01.png").ndim == 2  # 8-bit grey stays grey
    assert decode_image_file(lab / "img_02.png").shape[-1] == 3  # RGBA: alpha dropped
    wide = np.asarray(Image.open(lab / "img_04.png"))
    assert wide.dtype == np.uint16 and wide.max() > 255
    assert np.array_equal(decode_image_file(lab / "img_04.png"), np.rint(wide / 257).astype(np.uint8))
    grey = ImagesConfig(source="folder", path=str(lab), size_px=16, colour=False)
    colour = grey.model_copy(update={"colour": True})
    g, c = (
        resize_image(decode_image_file(lab / "img_00.png"), grey),
        resize_image(decode_image_file(lab / "img_00.png"), colour),
    )
    assert g.shape == (16, 16, 1) and c.shape == (16, 16, 3)
    assert np.abs(g[..., 0].astype(float) - c.astype(float) @ [0.299, 0.587, 0.114]).max() <= 1.0
    grey_in_colour = resize_image(decode_image_file(lab / "img_01.png"), colour)
    assert np.array_equal(grey_in_colour[..., 0], grey_in_colour[..., 2])  # grey files: equal channels


def test_fit_crop_takes_the_centred_square_and_stretch_the_whole_image():
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)  # red left third
    wide[:, 40:80] = (0, 255, 0)  # green centred square
    wide[:, 80:] = (0, 0, 255)
    crop = resize_image(wide, ImagesConfig(size_px=8, fit="crop"))
    assert np.all(crop == (0, 255, 0))
    stretch = resize_image(wide, ImagesConfig(size_px=9, fit="stretch"))
    assert tuple(stretch[4, 0]) == (255, 0, 0) and tuple(stretch[4, 4]) == (0, 255, 0)
    assert tuple(stretch[4, 8]) == (0, 0, 255)
    # Float pixels in [0, 1] (arrays) are scaled to 0..255 like uint8 ones.
    assert np.array_equal(resize_image(wide / 255.0, ImagesConfig(size_px=8)), crop)


def test_test_share_holds_out_whole_files_chosen_by_seed(tmp_path):
    write_lab_folder(tmp_path / "lab", n_train=50, n_test=0)
    p = make_pools(own(tmp_path, test_share=0.2, pool_size=40, gaudy_share=0.0))
    assert len(p.test_origin) == 10 and len(set(p.test_origin)) == 10
    assert not set(p.test_origin) & set(p.train_origin) and len(set(p.train_origin)) == 40
    again = make_pools(own(tmp_path, test_share=0.2, pool_size=40, gaudy_share=0.0, seed=0, fit="crop"))
    other = make_pools(own(tmp_path, test_share=0.2, pool_size=40, gaudy_share=0.0, seed=5))
    assert again.test_origin == p.test_origin and other.test_origin != p.test_origin


def test_npy_array_with_share_or_a_test_array(tmp_path):
    rng = np.random.default_rng(1)
    stim = rng.integers(0, 256, (30, 24, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "stim.npy", stim)
    cfg = own(tmp_path, source="npy", path=str(tmp_path / "stim.npy"), test_share=0.4, test_size=12, pool_size=12)
    p = make_pools(cfg)
    assert p.train.shape == (12, 16, 16, 3) and p.test.shape == (12, 16, 16, 3)
    for name, img in zip(p.test_origin, p.test):
        i = int(name.removeprefix("stim.npy[").removesuffix("]"))
        assert np.array_equal(img, resize_image(stim[i], cfg))
    assert not set(p.test_origin) & set(p.train_origin)
    # A separate array of test images, float in [0, 1] and grey.
    np.save(tmp_path / "held.npy", rng.random((10, 20, 20)).astype(np.float32))
    q = make_pools(
        own(
            tmp_path,
            source="npy",
            path=str(tmp_path / "stim.npy"),
            test_path=str(tmp_path / "held.npy"),
            pool_size=30,
            gaudy_share=0.0,
        )
    )
    assert q.test_origin == tuple(f"held.npy[{i}]" for i in range(10))
    assert len(q.train_origin) == 30 and all(n.startswith("stim.npy[") for n in q.train_origin)
    assert np.all(q.test[..., 0] == q.test[..., 1])  # grey entries, colour rig


def test_second_build_reads_the_cache_instead_of_decoding(tmp_path, monkeypatch):
    write_lab_folder(tmp_path / "lab", n_train=14, n_test=10)
    calls = count_decodes(monkeypatch)
    cfg = own(tmp_path, test_files=["test_*"], test_size=10, pool_size=10, gaudy_share=0.0)
    first = make_pools(cfg)
    assert len(calls) == 24
    make_pools.cache_clear()
    calls.clear()
    second = make_pools(cfg)
    assert calls == [] and np.array_equal(first.train, second.train) and np.array_equal(first.test, second.test)
    assert first.train_origin == second.train_origin
    # The split is not part of the key: another test set from the same files decodes nothing.
    make_pools(cfg.model_copy(update={"test_files": ("test_2*", "img_0*")}))
    assert calls == []
    # A changed file is another key; another size_px too.
    Image.fromarray(np.full((30, 30, 3), 9, np.uint8)).save(tmp_path / "lab" / "img_05.png")
    make_pools.cache_clear()
    make_pools(cfg)
    assert len(calls) == 24
    calls.clear()
    make_pools(cfg.model_copy(update={"size_px": 12}))
    assert len(calls) == 24


def test_npy_cache_hit_resizes_nothing(tmp_path, monkeypatch):
    np.save(tmp_path / "stim.npy", np.random.default_rng(2).integers(0, 256, (25, 20, 20), dtype=np.uint8))
    cfg = own(tmp_path, source="npy", path=str(tmp_path / "stim.npy"), test_share=0.4)
    make_pools(cfg)
    make_pools.cache_clear()
    resized = []
    real = pools.resize_image
    monkeypatch.setattr(pools, "resize_image", lambda img, c: resized.append(1) or real(img, c))
    make_pools(cfg)
    assert resized == []
    np.save(tmp_path / "stim.npy", np.random.default_rng(3).integers(0, 256, (25, 20, 20), dtype=np.uint8))
    make_pools.cache_clear()
    make_pools(cfg)
    assert len(resized) == 25


def test_damaged_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    write_lab_folder(tmp_path / "lab", n_train=12, n_test=10)
    cfg = own(tmp_path, test_files=["test_*"])
    first = make_pools(cfg)
    (entry,) = (tmp_path / "cache").glob("*.npz")
    entry.write_bytes(b"not a zip file")
    make_pools.cache_clear()
    calls = count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="damaged image cache entry"):
        again = make_pools(cfg)
    assert len(calls) == 22 and np.array_equal(first.test, again.test)


BUILD_IN_FRESH_INTERPRETER = """
import json, sys
import stimulus.pools as pools
from stimulus.config import ImagesConfig
from contract.images import image_hash
decoded = []
real = pools.decode_image_file
pools.decode_image_file = lambda path: decoded.append(1) or real(path)
p = pools.make_pools(ImagesConfig(**json.loads(sys.argv[1])))
print(json.dumps({"train": [image_hash(x) for x in p.train], "test": [image_hash(x) for x in p.test],
                  "origin": list(p.train_origin) + list(p.test_origin), "decoded": len(decoded)}))
"""


def test_every_process_builds_the_same_pools(tmp_path):
    """Two fresh interpreters (as the cortex, model worker and controller are), the first decoding into an empty
    cache and the second reading it, build the same pools as this one (which decodes into another cache)."""
    write_lab_folder(tmp_path / "lab", n_train=20, n_test=10)
    keys = dict(
        source="folder",
        path=str(tmp_path / "lab"),
        size_px=16,
        pool_size=15,
        test_size=10,
        test_files=["test_*"],
        cache_dir=str(tmp_path / "shared-cache"),
    )
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", BUILD_IN_FRESH_INTERPRETER, json.dumps(keys)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    assert runs[0]["decoded"] == 30 and runs[1]["decoded"] == 0  # the second process read the cache
    here = make_pools(ImagesConfig(**{**keys, "cache_dir": str(tmp_path / "own-cache")}))
    mine = {
        "train": [image_hash(x) for x in here.train],
        "test": [image_hash(x) for x in here.test],
        "origin": list(here.train_origin) + list(here.test_origin),
    }
    for run in runs:
        assert {k: run[k] for k in mine} == mine
    assert len(set(mine["train"])) == 15 and len(set(mine["test"])) == 10


# ---- bad input: each error names the file (or key) and why ----


def test_config_refuses_keys_that_do_not_fit_the_source():
    from pydantic import ValidationError

    for keys, message in [
        (dict(path="stim"), "path: only for source = 'folder' or 'npy'"),
        (dict(test_files=["a.png"]), "test_files: only for source"),
        (dict(source="folder"), "source = 'folder' needs a path"),
        (dict(source="npy"), "source = 'npy' needs a path"),
        (dict(source="folder", path="x", test_path="t.npy"), "test_path: only for source = 'npy'"),
        (dict(source="npy", path="x.npy", test_files=["a"]), "test_files: only for source = 'folder'"),
        (dict(source="folder", path="x", test_files=["a"], test_share=0.1), "already named by test_files"),
        (dict(source="folder", path="x", test_share=1.0), "less than 1"),
        (dict(source="folders", path="x"), "'photos', 'folder' or 'npy'"),
    ]:
        with pytest.raises(ValidationError, match=message):
            ImagesConfig(**keys)
    one = ImagesConfig(source="folder", path="lab", test_files="test_*.png")  # one pattern as a string
    assert one.test_files == ("test_*.png",) and one.path == str(Path.cwd() / "lab")  # stored absolute


def test_rig_file_error_names_the_key(tmp_path):
    from controller.config import RigFileError, load_rig

    rig = tmp_path / "rig.toml"
    rig.write_text('[images]\nsource = "folder"\n')
    with pytest.raises(RigFileError, match="images.*needs a path"):
        load_rig(rig)
    rig.write_text('[images]\nsource = "folder"\npath = "no/such/folder"\n')
    assert load_rig(rig).images.path.endswith("no/such/folder")  # checked when the pools are built, not here


def test_folder_errors_name_the_file_and_why(tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    with pytest.raises(ImageSourceError, match=f"{lab}: images.path: no such folder"):
        make_pools(own(tmp_path))
    lab.mkdir()
    with pytest.raises(ImageSourceError, match="no image files .*it is empty"):
        make_pools(own(tmp_path))
    (lab / "readme.txt").write_text("x")
    with pytest.raises(ImageSourceError, match="no image files .*'readme.txt'"):
        make_pools(own(tmp_path))
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ImageSourceError, match="a.png: images.path: not a folder"):
        make_pools(own(tmp_path, path=str(tmp_path / "a.png")))
    write_lab_folder(lab, n_train=12, n_test=10)
    (lab / "img_05.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageSourceError, match=r"img_05.png: cannot be read as an image \("):
        make_pools(own(tmp_path, test_files=["test_*"]))
    write_lab_folder(lab, n_train=12, n_test=10)
    decoded = count_decodes(monkeypatch)
    with pytest.raises(ImageSourceError, match=r"test_files: 'tset_\*' is not an image file in the folder"):
        make_pools(own(tmp_path, test_files=["test_*", "tset_*"]))
    assert decoded == []  # a misspelt test file is found before the folder is decoded
    with pytest.raises(ImageSourceError, match="test_files: 'missing.png' is not an image file"):
        make_pools(own(tmp_path, test_files=["missing.png"]))
    with pytest.raises(ImageSourceError, match="every image file is a test file"):
        make_pools(own(tmp_path, test_files=["*"]))


def test_fewer_images_than_asked(tmp_path):
    write_lab_folder(tmp_path / "lab", n_train=12, n_test=10)
    with pytest.raises(
        ImageSourceError,
        match=r"pool_size: 12 training images, but pool_size 20 with gaudy_share "
        r"0.2 asks for 16 natural .* set pool_size to at most 15",
    ):
        make_pools(own(tmp_path, test_files=["test_*"], pool_size=20))
    with pytest.raises(
        ImageSourceError,
        match=r"test_size: 10 test images \(the files test_files names\), but "
        "test_size asks for 11",
    ):
        make_pools(own(tmp_path, test_files=["test_*"], test_size=11))
    assert len(make_pools(own(tmp_path, test_files=["test_*"], pool_size=15)).train) == 15  # the largest pool fits


def test_a_test_image_that_is_also_a_training_image_is_refused(tmp_path):
    write_lab_folder(tmp_path / "lab", n_train=12, n_test=10)
    (tmp_path / "lab" / "test_15.png").write_bytes((tmp_path / "lab" / "img_03.jpg").read_bytes())
    with pytest.raises(ImageSourceError, match="test_15.png: test image identical .* training image img_03.jpg"):
        make_pools(own(tmp_path, test_files=["test_*"]))


def test_npy_errors_name_the_file_and_why(tmp_path):
    def build(arr, name="stim.npy", **keys):
        path = tmp_path / name
        np.save(path, arr, allow_pickle=True) if arr is not None else None
        make_pools.cache_clear()
        return make_pools(own(tmp_path, source="npy", path=str(path), **keys))

    with pytest.raises(ImageSourceError, match="missing.npy: images.path: no such file"):
        build(None, "missing.npy")
    with pytest.raises(ImageSourceError, match=r"stim.npy: shape \(30, 16\): expected \(N, H, W\)"):
        build(np.zeros((30, 16), np.uint8))
    with pytest.raises(ImageSourceError, match=r"shape \(30, 3, 16, 16\).*channels first"):
        build(np.zeros((30, 3, 16, 16), np.uint8))
    with pytest.raises(ImageSourceError, match=r"shape \(0, 16, 16\): no images"):
        build(np.zeros((0, 16, 16), np.uint8))
    with pytest.raises(ImageSourceError, match="stim.npy: dtype int16: expected uint8"):
        build(np.zeros((30, 16, 16), np.int16))
    with pytest.raises(ImageSourceError, match="dtype float64 with values from 0.0 to 255.0: float images must"):
        build(np.linspace(0, 255, 30 * 16 * 16).reshape(30, 16, 16))
    with pytest.raises(ImageSourceError, match="float images must lie in"):
        build(np.full((30, 16, 16), np.nan))
    with pytest.raises(ImageSourceError, match="stim.npy: it holds Python objects"):
        build(np.array([{"a": 1}] * 30, dtype=object))
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ImageSourceError, match="text.npy: not a .npy array \\(it does not start"):
        make_pools(own(tmp_path, source="npy", path=str(tmp_path / "text.npy")))
    np.savez(tmp_path / "both.npz", a=np.zeros((30, 8, 8), np.uint8))
    with pytest.raises(ImageSourceError, match="both.npz: an .npz archive"):
        make_pools(own(tmp_path, source="npy", path=str(tmp_path / "both.npz")))
    with pytest.raises(ImageSourceError, match="test_path: no such file"):
        build(np.zeros((30, 8, 8), np.uint8), test_path=str(tmp_path / "nope.npy"))
    with pytest.raises(ImageSourceError, match=r"test_share: 0.01 of 30 image\(s\) holds out 0"):
        build(np.zeros((30, 8, 8), np.uint8), test_share=0.01)


def test_shipped_example_rig_builds_its_pools_from_the_example_folder(tmp_path, monkeypatch):
    from controller.config import load_rig

    monkeypatch.chdir(REPO)  # the rig's path is relative to where cortexloop starts
    images = load_rig(REPO / "rigs" / "own_images.toml").images
    p = make_pools(images.model_copy(update={"cache_dir": str(tmp_path)}))
    files = sorted(f.name for f in (REPO / "docs" / "example_images").iterdir() if f.suffix in (".png", ".jpg"))
    assert p.train.shape == (12, 32, 32, 3) and p.test.shape == (10, 32, 32, 3)
    assert set(p.test_origin) == {f for f in files if f.startswith("test_")}
    assert set(p.train_origin) <= {f for f in files if not f.startswith("test_")}
