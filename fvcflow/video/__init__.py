"""Video I/O: the only code in fvcflow that opens video containers.

``probe`` describes a file, ``iter_luma``/``read_luma`` decode the luma of chosen frames
(``iter_yuv`` all three planes), ``iter_rgb`` decodes everything in chunks, ``read_rgb`` the RGB
frames at chosen indices (deep-model clips), ``VideoWriter`` encodes. Every unreadable file is a
:class:`fvcflow.errors.VideoError` naming the file and the reason.
"""

from fvcflow.video.probe import VideoInfo, probe
from fvcflow.video.read import (
    LumaReader,
    iter_luma,
    iter_rgb,
    iter_yuv,
    plan_reads,
    read_luma,
    read_rgb,
    sample_indices,
)
from fvcflow.video.write import VideoWriter

__all__ = [
    "VideoInfo", "probe", "sample_indices", "iter_luma", "iter_yuv", "read_luma", "iter_rgb", "read_rgb",
    "LumaReader",
    "plan_reads", "VideoWriter",
]
