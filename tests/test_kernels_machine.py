"""The kernels give the same bits whatever CPU Numba compiles them for (kernels/config.py).

Each run is a subprocess with its own Numba cache: this machine as it is, and Numba told to
compile for an AVX2 CPU without AVX-512 (``haswell``: 256-bit vectors, FMA) and for an SSE4.2
CPU (``nehalem``: 128-bit vectors, no FMA), so that at least two vector widths meet on any x86
machine. Every per-frame, local and temporal feature must be equal; a control, the uint8 pass's
float sums as they were compiled before (with ``reassoc``), must differ, which shows that the
emulation changes how float sums are vectorised and that the comparison would see it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="emulates other x86 CPUs")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
import numba
import numpy as np
from fvcflow import kernels as K

@numba.jit(nopython=True, fastmath={"reassoc", "contract", "nsz"})
def old_float_sums(bd, bm, km):   # the control: the uint8 pass's float sums as they were compiled
    f3 = 0.0
    f4 = 0.0
    m1 = 0.0
    m2 = 0.0
    for j in range(bd.shape[0]):
        d = np.float64(bd[j])
        d2 = d * d
        f3 += d2 * d
        f4 += d2 * d2
        f = np.float64(bm[j]) - km
        m1 += f
        m2 += f * f
    return np.array([f3, f4, m1, m2])

rng = np.random.default_rng(7)
frames = []
for h, w in ((72, 1100), (97, 131), (64, 96)):
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = 120 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    frames.append(np.clip(smooth + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8))
    frames.append(rng.integers(0, 256, (h, w)).astype(np.uint8))
out = [K.frame_features(f) for f in frames]
out += [K.frame_features(f.astype(np.float64) * 0.75 + 0.125) for f in frames]
local = []
for f in frames:
    r = K.local_frame(f, np.ascontiguousarray(f[::2, ::2]), np.ascontiguousarray(255 - f[::2, ::2]))
    local.append(r)
    out += [r.features, r.maps.ravel(), r.coarse_maps.ravel(), r.zmap.ravel()]
out.append(K.temporal_features(local[-2:]))
out.append(K.temporal_features([local[1], local[1], local[1]]))
np.save(sys.argv[1], np.concatenate(out))
bd = rng.normal(0, 50, 511).round().astype(np.float32)
np.save(sys.argv[2], old_float_sums(bd, (rng.random(511) * 30).astype(np.float32), 11.3))
"""


def _features(drop: tuple[str, ...]) -> str:
    """This CPU's LLVM features with those starting with ``drop`` turned off."""
    import llvmlite.binding as ll

    feats = ll.get_host_cpu_features()
    return ",".join(("-" if k.startswith(drop) or not v else "+") + k for k, v in sorted(feats.items()))


AVX512 = ("avx512", "amx", "avx10", "avxvnni", "avxifma", "avxneconvert", "vaes", "vpclmulqdq", "gfni")
EMULATED = {
    "haswell": AVX512,
    "nehalem": AVX512 + ("avx", "fma", "f16c", "bmi", "lzcnt", "movbe", "xsave", "fsgsbase", "rdrnd",
                         "adx", "rdseed", "sha", "invpcid", "rtm"),
}


def _run(tmp: Path, name: str, cpu: str | None) -> subprocess.Popen:
    """This machine's run (``cpu`` None) uses the kernels' own on-disk cache, as the library runs
    them (compiled once for the whole suite); an emulated CPU compiles into a cache of its own."""
    env = dict(os.environ)
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    if cpu is not None:
        env.update(NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=_features(EMULATED[cpu]),
                   NUMBA_CACHE_DIR=str(tmp / f"numba-{name}"))
    args = [sys.executable, "-c", SCRIPT, str(tmp / f"{name}.npy"), str(tmp / f"{name}-control.npy")]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("machine")
    procs = {"host": _run(tmp, "host", None), **{cpu: _run(tmp, cpu, cpu) for cpu in EMULATED}}
    out = {}
    for name, p in procs.items():
        said, _ = p.communicate(timeout=600)
        assert p.returncode == 0, said
        out[name] = (np.load(tmp / f"{name}.npy"), np.load(tmp / f"{name}-control.npy"))
    return out


@pytest.mark.parametrize("cpu", sorted(EMULATED))
def test_features_are_the_same_bits_on_another_cpu(runs, cpu):
    host, emulated = runs["host"][0], runs[cpu][0]
    assert host.size > 1000 and np.isfinite(host).mean() > 0.9
    np.testing.assert_array_equal(emulated, host)      # every value (NaN where NaN), no tolerance


def test_the_emulation_changes_reassociated_sums(runs):
    """The harness sees what the kernels' old flags did: the uint8 pass's float sums compiled
    with ``reassoc`` come out different for the AVX2 CPU (and the SSE one) than for this machine's
    build, or for one another (without this, the tests above would prove nothing)."""
    controls = {name: tuple(control) for name, (_, control) in runs.items()}
    assert len(set(controls.values())) > 1, controls


def test_power_sums_past_two_to_the_53():
    """Rows of 0 between rows of 255 make R jump by 2295 from one row's mean to the next: a chunk's
    sum of d^4 passes 2^53, where float64 would round in an order-dependent way; the pass sums it
    exactly instead, and the kurtosis matches the naive twin's."""
    from fvcflow.kernels import _neigh_u8, frame_features
    from tests import naive as N

    rows = np.array([255, 0, 255] * 4, np.uint8)
    frame = np.repeat(rows[:, None], 600, axis=1)
    d = np.full(512, 2295, np.float32)
    assert (d.astype(np.float64) ** 4).sum() > 2.0 ** 53
    s3, s4 = _neigh_u8._power_sums(d, 512)
    assert s3 == 512 * 2295 ** 3 and s4 == 512 * 2295 ** 4
    got = frame_features(frame)[:3]
    np.testing.assert_allclose(got, N.noise_residual(frame), rtol=1e-12)
