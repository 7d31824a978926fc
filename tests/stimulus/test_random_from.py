"""selection.random_from: which pool images the "random" kind draws (the efficiency benchmark's random arms)."""

import pytest

from stimulus.config import ImagesConfig
from stimulus.pools import make_pools
from stimulus.selection import ImageChooser
from stimulus.selection_config import SelectionConfig


@pytest.mark.parametrize(
    "source, allowed", [("natural", {"natural"}), ("gaudy", {"gaudy"}), ("both", {"natural", "gaudy"})]
)
def test_random_images_come_from_the_part_of_the_pool_random_from_names(source, allowed):
    pools = make_pools(ImagesConfig(size_px=16, pool_size=60, test_size=10, gaudy_share=0.3, seed=3))
    chooser = ImageChooser(SelectionConfig(mix={"random": 1.0}, random_from=source), pools, seed=1)
    kinds = set()
    for trial in range(30):
        for c in chooser.choose(trial, 5):
            kinds.add(pools.train_kind[int(c.reason.split("pool#")[1].split()[0])])
    assert kinds == allowed  # 150 draws from 60 images: "both" shows both kinds


def test_the_default_keeps_random_images_natural():
    assert SelectionConfig().random_from == "natural"
