"""Split, nested MOS subsets and random pairs."""

import numpy as np
import pandas as pd
import pytest

from leaf.pairs import random_pairs
from leaf.split import mos_subsets, train_test_split


def _manifest(n=100, groups=10):
    return pd.DataFrame(
        {
            "image_id": [f"img{i:03d}.png" for i in range(n)],
            "prompt": [f"prompt {i % groups}" for i in range(n)],
            "set": ["test" if i % 5 == 0 else "training" for i in range(n)],
        }
    )


def test_split_is_deterministic_and_80_20():
    first = train_test_split(_manifest(), 0.2, seed=0)
    again = train_test_split(_manifest(), 0.2, seed=0)
    other = train_test_split(_manifest(), 0.2, seed=1)
    pd.testing.assert_frame_equal(first, again)
    assert (first["split"] == "test").sum() == 20
    assert not first["split"].equals(other["split"])


def test_group_split_keeps_each_group_on_one_side():
    manifest = _manifest()
    split = train_test_split(manifest, 0.2, seed=3, group_by="prompt")
    sides = manifest.assign(split=split["split"]).groupby("prompt")["split"].nunique()
    assert (sides == 1).all()
    assert (split["split"] == "test").sum() == 20  # 2 of 10 groups of 10


def test_official_split_column():
    split = train_test_split(_manifest(), 0.2, seed=0, official_column="set")
    assert (split["split"] == "test").sum() == 20
    assert set(split.loc[split["split"] == "test", "image_id"]) == {
        f"img{i:03d}.png" for i in range(0, 100, 5)
    }


def test_unknown_group_column_names_the_key():
    with pytest.raises(KeyError, match="split.group_by='nope'"):
        train_test_split(_manifest(), 0.2, seed=0, group_by="nope")


def test_subsets_are_nested_sized_and_seeded():
    train = [f"t{i}" for i in range(200)]
    subsets = mos_subsets(train, [0.0, 0.1, 0.3], seed=7, holdout_fraction=0.25)
    assert set(subsets["ratio"]) == {0.1, 0.3}  # ratio 0 sees no MOS
    small = subsets[subsets["ratio"] == 0.1]
    large = subsets[subsets["ratio"] == 0.3]
    assert len(small) == 20 and len(large) == 60
    assert set(small["image_id"]) <= set(large["image_id"])
    # held-out parts are nested too, and take a quarter of each subset
    assert set(small.loc[small.role == "select", "image_id"]) <= set(
        large.loc[large.role == "select", "image_id"]
    )
    assert (large["role"] == "select").sum() == 15
    other_seed = mos_subsets(train, [0.1], seed=8, holdout_fraction=0.25)
    assert set(other_seed["image_id"]) != set(small["image_id"])


def test_pairs_are_distinct_uniform_and_seeded():
    ids = [f"i{k}" for k in range(50)]
    pairs = random_pairs(ids, per_image=1.0, seed=0)
    assert len(pairs) == 50
    assert (pairs["image_a"] != pairs["image_b"]).all()
    pd.testing.assert_frame_equal(pairs, random_pairs(ids, 1.0, seed=0))
    many = random_pairs(ids, per_image=200.0, seed=1)
    counts = pd.concat([many["image_a"], many["image_b"]]).value_counts()
    assert counts.size == 50
    # every image appears about 2 * 200 = 400 times; a biased draw would spread far wider
    assert counts.min() > 300 and counts.max() < 500
    assert np.isclose((many["image_a"] < many["image_b"]).mean(), 0.5, atol=0.02)


def test_pairs_need_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        random_pairs(["only"], 1.0, 0)
