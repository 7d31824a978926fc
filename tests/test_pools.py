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

    from stimulus.images import image_hash

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

    sim = load_rig(Path(__file__).resolve().parent.parent / "rigs" / "sim.toml").images
    assert sim.model_dump(include=set(PHOTO_POOL_DIGESTS[0][0])) == PHOTO_POOL_DIGESTS[0][0]  # the default rig
    for keys, digest in PHOTO_POOL_DIGESTS:
        assert pools_digest(make_pools(ImagesConfig(**keys))) == digest, keys
