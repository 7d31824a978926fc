"""Image pools: sizes, determinism, gaudy images, and a held-out test set that has colour and shares no pixels."""
import numpy as np

from stimulus.config import ImagesConfig
from stimulus.pools import COLOUR_SOURCES, _source, gaudy, make_pools, split_regions


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
    for name in COLOUR_SOURCES:
        img = _source(name)
        if img is None:
            continue
        train, held = split_regions(img)
        assert train.size + held.size == img.size
        assert not np.shares_memory(train, held) or (train.base is img and held.base is img)
        # The regions tile the image: the strip is what the training region leaves out.
        if img.shape[1] >= img.shape[0]:
            assert np.array_equal(np.concatenate([train, held], 1), img)
        else:
            assert np.array_equal(np.concatenate([train, held], 0), img)


def test_grey_rig_pools_have_one_channel():
    p = make_pools(ImagesConfig(size_px=16, colour=False, pool_size=20, test_size=10))
    assert p.train.shape == (20, 16, 16, 1) and p.test.shape == (10, 16, 16, 1)


def test_gaudy_binarizes_each_channel_at_its_mean():
    x = np.zeros((1, 4, 4, 3), np.uint8)
    x[0, :2, :, 0] = 200
    x[0, :, :2, 2] = 50
    g = gaudy(x)
    assert np.array_equal(g[0, :, :, 0] == 255, x[0, :, :, 0] > x[0, :, :, 0].mean())
    assert np.all(g[0, :, :, 1] == 0)  # a flat channel stays dark
