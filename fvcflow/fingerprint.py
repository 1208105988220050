"""The environment a run's numbers come from: library versions, the CPU and its vector extensions.

Two users whose table digests (``fvc run``'s summary, :mod:`fvcflow.digest`) or metrics differ
compare these to see why: a library version, or a CPU on which a library picks other SIMD code.
:func:`fingerprint` is logged as MLflow tags of every training run (``fvc.env.<key>``) and shown
in the report and the model card.

What the keys say about machine-dependence: the Numba kernels give the same bits on every CPU
(``kernels/config.py``), so ``numba_cpu`` and ``numba_vector`` only name what they were compiled
for, unless ``numba_svml`` is ``yes`` (Intel's SVML installed: Numba then vectorises ``log1p``
and the like per instruction set). NumPy (``numpy_simd``: ``log1p`` and other transcendental
functions have AVX-512 versions with other last bits), OpenCV (``opencv_simd``) and the BLAS
(``blas``: its kernels are chosen per CPU) pick code by CPU at run time, and so do FFmpeg and
x264 (their SIMD is bit-exact by design: the stage 1 and 3 videos were byte-identical between
this AVX-512 machine and an emulated AVX2 one).

Only the standard library is imported here; the libraries are asked when :func:`fingerprint`
runs (once per process); an optional one that is not installed reads ``absent``.

>>> fp = fingerprint()
>>> sorted(k for k in ("python", "numpy", "numba", "cpu", "cpu_vector", "numba_cpu") if k in fp)
['cpu', 'cpu_vector', 'numba', 'numba_cpu', 'numpy', 'python']
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from pathlib import Path

#: key -> the distributions that provide it (the first installed one is reported)
LIBRARIES = {
    "numpy": ("numpy",), "numba": ("numba",), "llvmlite": ("llvmlite",), "scipy": ("scipy",),
    "polars": ("polars",), "pyarrow": ("pyarrow",), "scikit-learn": ("scikit-learn",),
    "xgboost": ("xgboost",), "lightgbm": ("lightgbm",), "catboost": ("catboost",), "torch": ("torch",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
               "opencv-contrib-python"),
    "av": ("av",), "mlflow": ("mlflow",), "fvcflow": ("fvcflow",),
}
#: the CPU flags that decide which SIMD code libraries run (x86 /proc/cpuinfo and LLVM names, Arm)
VECTOR_FLAGS = ("sse4_2", "sse4.2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512vnni", "avx512_bf16", "avx512bf16", "avx512_fp16", "avx512fp16",
                "amx_tile", "amx-tile", "asimd", "neon", "sve", "sve2")
ABSENT = "absent"
#: the keys that say which code computed the numbers (the versions are the other keys)
MACHINE_KEYS = ("cpu", "cpu_vector", "numba_cpu", "numba_vector", "numba_svml", "numpy_simd", "opencv_simd",
                "blas")


def _version(names: tuple[str, ...]) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ABSENT


def _cpuinfo() -> tuple[str | None, set[str]]:
    """(model name, flags) from /proc/cpuinfo; (None, empty) where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None, set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def _vector(flags) -> str:
    """The ``VECTOR_FLAGS`` among ``flags``, in that order, space-separated."""
    return " ".join(f for f in VECTOR_FLAGS if f in flags) or "none"


def _numba_target() -> tuple[str, str, str]:
    """The CPU name and vector features Numba compiles for (``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES`` when set, else this machine's): its CPU code generator's own answer;
    and whether it uses Intel's SVML (vectorised log, exp ...: other bits per instruction set)."""
    import numba
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    features = codegen._get_host_cpu_features()
    on = {f[1:] for f in features.split(",") if f.startswith("+")}
    return codegen._get_host_cpu_name(), _vector(on), "yes" if numba.config.USING_SVML else "no"


def _numpy_simd() -> str:
    """The SIMD targets NumPy's dispatcher uses on this machine (baseline, then dispatched)."""
    import numpy as np

    mu = (np._core if hasattr(np, "_core") else np.core)._multiarray_umath
    found = getattr(mu, "__cpu_features__", {})
    used = [f for f in (*getattr(mu, "__cpu_baseline__", []), *getattr(mu, "__cpu_dispatch__", []))
            if found.get(f)]
    return " ".join(dict.fromkeys(used)) or "none"


def _opencv_simd() -> str:
    import cv2

    return cv2.getCPUFeaturesLine()       # '*' dispatched at run time, '?' turned off


def _blas() -> str:
    from threadpoolctl import threadpool_info

    libs = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture') or ''}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(libs) or "none loaded"


def _ffmpeg() -> str:
    import av

    return str(getattr(av, "ffmpeg_version_info", None) or
               ".".join(map(str, av.library_versions.get("libavcodec", ()))))


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[tuple[str, str], ...]:
    model, flags = _cpuinfo()
    numba_cpu, numba_vector, numba_svml = _numba_target()
    cpu_vector = _vector(flags) if flags else numba_vector   # no /proc/cpuinfo: what LLVM sees
    libc = " ".join(platform.libc_ver()).strip()
    system = f"{platform.system()} {platform.release()} {platform.machine()}"
    out = {"python": platform.python_version(),
           **{key: _version(names) for key, names in LIBRARIES.items()},
           "ffmpeg": _ffmpeg(),
           "os": system + (f", {libc}" if libc else ""),
           "cpu": model or platform.processor() or platform.machine() or "unknown",
           "cpu_vector": cpu_vector,
           "numba_cpu": numba_cpu,
           "numba_vector": numba_vector,
           "numba_svml": numba_svml,
           "numpy_simd": _numpy_simd(),
           "opencv_simd": _opencv_simd(),
           "blas": _blas()}
    return tuple(out.items())


def fingerprint() -> dict[str, str]:
    """This process's environment: ``python``, one key per library of ``LIBRARIES`` (its version or
    ``absent``), ``ffmpeg`` (PyAV's FFmpeg), ``os`` (with the C library), ``cpu`` (model name),
    ``cpu_vector`` (its vector extensions: avx2, fma, avx512f ...), ``numba_cpu`` and
    ``numba_vector`` (what Numba compiles for), ``numba_svml`` (whether Numba vectorises math
    functions with Intel's SVML, whose results depend on the instruction set), ``numpy_simd``,
    ``opencv_simd`` and ``blas`` (the SIMD code those libraries chose on this machine). Every
    value is a short string."""
    return dict(_cached())


def tags(prefix: str = "fvc.env.") -> dict[str, str]:
    """:func:`fingerprint` as MLflow tags: ``{prefix + key: value}``."""
    return {f"{prefix}{k}": v for k, v in fingerprint().items()}


def summary_line(fp: dict[str, str] | None = None) -> str:
    """One line for people: the CPU, its vector extensions, and the versions that shape numbers.

    >>> summary_line({"cpu": "EPYC", "cpu_vector": "avx2 fma", "python": "3.11.7", "numpy": "2.4.6",
    ...               "numba": "0.68.1", "scikit-learn": "1.9.1", "xgboost": "3.2.0"})
    'EPYC (avx2 fma); Python 3.11.7, numpy 2.4.6, numba 0.68.1, scikit-learn 1.9.1, xgboost 3.2.0'
    """
    fp = fingerprint() if fp is None else fp
    keys = ("numpy", "numba", "scikit-learn", "xgboost", "lightgbm", "catboost", "torch", "opencv", "av")
    libs = [f"{k} {fp[k]}" for k in keys if fp.get(k, ABSENT) != ABSENT]
    cpu = f"{fp.get('cpu', 'unknown')} ({fp.get('cpu_vector', '?')})"
    return f"{cpu}; Python {fp.get('python', '?')}, " + ", ".join(libs)
