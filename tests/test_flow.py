"""Optical flow of clip windows (two-stream models): Farneback, RAFT-small, the uint8 code."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fvcflow.deep.flow import (
    FLOW_BOUND,
    Farneback,
    RaftSmall,
    decode_flow,
    encode_flow,
    flow_method,
    flow_windows,
    window_flow,
)
from fvcflow.errors import FvcError


def moving_texture(n: int, dx: int, dy: int, size: int = 64) -> np.ndarray:
    """``uint8[n, size, size, 3]``: a smooth random texture moving ``(dx, dy)`` pixels per frame."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur((rng.random((size + 80, size + 80)) * 255).astype(np.uint8), (0, 0), 2)
    frames = [big[40 - t * dy:40 - t * dy + size, 40 - t * dx:40 - t * dx + size] for t in range(n)]
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1)


def test_farneback_measures_a_known_translation():
    frames = moving_texture(4, dx=3, dy=-2)
    flow = window_flow(frames, Farneback())
    assert flow.shape == (4, 64, 64, 2) and flow.dtype == np.float32
    inner = flow[:, 16:48, 16:48]
    assert np.allclose(inner[..., 0].mean(), 3.0, atol=0.3)
    assert np.allclose(inner[..., 1].mean(), -2.0, atol=0.3)
    assert np.array_equal(flow[-1], flow[-2])                  # the last frame repeats the flow before it


def test_a_still_or_one_frame_window_has_no_flow():
    still = np.repeat(moving_texture(1, 0, 0), 3, axis=0)
    flow = window_flow(still, Farneback())
    assert np.abs(flow).max() < 0.1                            # under one uint8 step (0.126 px)
    assert (encode_flow(flow) == 128).mean() > 0.99
    assert not window_flow(still[:1], Farneback()).any()


def test_uint8_code_round_trips_within_half_a_step_and_clips():
    flow = np.array([[0.0, 0.05], [-3.3, 7.9], [FLOW_BOUND * 2, -FLOW_BOUND * 3]], np.float32)
    code = encode_flow(flow)
    assert code.dtype == np.uint8 and code[0, 0] == 128
    back = decode_flow(code) * FLOW_BOUND
    assert np.allclose(back[:2], flow[:2], atol=FLOW_BOUND / 127 / 2 + 1e-6)
    assert back[2].tolist() == [FLOW_BOUND, -FLOW_BOUND]       # beyond the bound: clipped to it


def test_flow_windows_encodes_every_window():
    windows = np.stack([moving_texture(3, 2, 0), moving_texture(3, 0, 0)])
    code = flow_windows(windows, Farneback())
    assert code.shape == (2, 3, 64, 64, 2) and code.dtype == np.uint8
    dx = decode_flow(code[..., 0]) * FLOW_BOUND
    assert abs(dx[0, :, 16:48, 16:48].mean() - 2.0) < 0.3 and abs(dx[1].mean()) < 0.1


def test_raft_needs_a_local_checkpoint():
    with pytest.raises(FvcError, match="train.deep.flow_weights.*local checkpoint"):
        RaftSmall(None)
    with pytest.raises(FvcError, match="must be farneback or raft_small"):
        flow_method("tvl1")


def test_raft_small_from_a_local_checkpoint_runs_on_odd_sizes(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "raft_small.pth")
    method = flow_method("raft_small", str(tmp_path / "raft_small.pth"))
    frames = moving_texture(3, 1, 1, size=68)[:, :, :60]        # 68 x 60: padded to 72 x 64 inside
    flow = window_flow(frames, method)
    assert flow.shape == (3, 68, 60, 2) and np.isfinite(flow).all()
    assert method.config()["method"] == "raft_small" and len(method.config()["weights"]) >= 16
