"""The trainer's uint8 loader: workers index, the device converts, resizes and normalises.

The reference is the float path the loader had before (``augment`` then ``normalise`` per clip,
``F.interpolate`` for the crop), on the same cached windows and the same random draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvcflow.deep.clips import ClipCache, ClipSource, clip_offsets, jitter
from fvcflow.deep.data import ClipDataset, RawClips, augment, make_loader, normalise, to_input
from fvcflow.models.torch_common import ClipSpec
from tests.deep_lake import FLOW, deep_rows, tiny_deep_config, write_deep_lake

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SPEC = ClipSpec(frames=4, clips=2, size=32)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("loader") / "fvc-data", n_groups=5)


def _sources(lake):
    rows = deep_rows(lake, tiny_deep_config("naive_3dcnn"))
    return [ClipSource(r["video_id"], r["path"], r["content_hash"], r["n_frames"]) for r in rows.to_dicts()]


def reference(ds: ClipDataset, index: int) -> torch.Tensor:
    """Item ``index`` as the float loader made it: whole-clip float32, flip, crop + interpolate, normalise."""
    epoch, i = divmod(index, len(ds))
    v, k = divmod(i, ds.spec.clips)
    gen = torch.Generator().manual_seed(hash((ds.seed, epoch, i)) & 0x7FFFFFFF)
    offset = int(torch.randint(0, jitter(ds.spec) + 1, (1,), generator=gen))
    frames = np.ascontiguousarray(ds._windows(v)[k][clip_offsets(ds.spec, offset)])
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)
    return normalise(augment(x, gen), ds.spec)


@pytest.mark.parametrize("spec", [SPEC, FLOW], ids=["rgb", "rgb+flow"])
def test_device_side_crop_resize_matches_the_float_loader(lake, tmp_path, spec):
    ds = ClipDataset(_sources(lake), [0] * len(_sources(lake)), spec, ClipCache(tmp_path), train=True,
                     seed=5).prepare()
    cropped = 0
    for index in range(0, 2 * len(ds), 3):                  # two epochs' draws
        frames, aug, _, _ = ds.raw(index)
        assert frames.dtype == torch.uint8 and frames.shape == (4, 32, 32, spec.n_channels)
        cropped += int(aug[3]) != 32 or int(aug[4]) != 32
        assert torch.allclose(ds[index][0], reference(ds, index), atol=2e-5), index
    assert cropped > 3                                       # the crops were exercised


def test_a_raw_batch_through_workers_equals_the_items(lake, tmp_path):
    ds = ClipDataset(_sources(lake)[:6], [0, 1] * 3, SPEC, ClipCache(tmp_path), train=True, seed=2).prepare()
    loader = make_loader(ds, batch_size=4, shuffle=True, workers=2, pin_memory=False, seed=1, raw=True)
    loader.sampler.set_epoch(1)
    seen = 0
    for raw, _, v in loader:
        assert isinstance(raw, RawClips) and raw.data.dtype == torch.uint8
        x = to_input(raw, SPEC, torch.device("cpu"))
        order = list(loader.sampler)[seen:seen + len(v)]
        expected = torch.stack([ds[i][0] for i in order])
        assert torch.equal(x, expected)                      # batching changes nothing
        seen += len(v)
    assert seen == len(ds)
    float_bytes = ds[0][0].numel() * 4
    assert ds.raw(0)[0].numel() * ds.raw(0)[0].element_size() * 4 == float_bytes    # a quarter of the bytes
