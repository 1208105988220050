"""Our top-level ``kernels/`` and ``flows/`` folders never hide packages of those names (issue 27).

``transformers`` (5.x) imports Hugging Face's ``kernels`` distribution; the repository's own
``kernels/`` folder is installed as ``fvcflow.kernels``. Run the way ``make test`` runs (the
repository root after site-packages), both must resolve to their own files.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, root_ahead_of_site_packages

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_this_process_has_the_repository_root_after_site_packages(monkeypatch):
    assert not root_ahead_of_site_packages(sys.path)
    assert root_ahead_of_site_packages([str(ROOT), *sys.path])
    assert not root_ahead_of_site_packages([*sys.path, str(ROOT)])
    monkeypatch.chdir(ROOT)             # '' is the working directory: `python -m` from the root
    assert root_ahead_of_site_packages(["", *sys.path])


def test_hugging_face_kernels_and_our_kernels_are_each_their_own():
    import fvcflow.kernels

    spec = importlib.util.find_spec("kernels")
    assert spec is not None and spec.origin is not None
    assert not Path(spec.origin).resolve().is_relative_to(ROOT / "kernels"), spec.origin
    assert Path(fvcflow.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"
    assert callable(fvcflow.kernels.frame_features)
    import fvcflow.flows
    assert Path(fvcflow.flows.__file__).resolve() == ROOT / "flows" / "__init__.py"


def test_transformers_hub_kernels_integration_imports_and_timesformer_builds():
    import torch
    from transformers.integrations import hub_kernels

    from fvcflow.models import create_model
    from fvcflow.models.torch_common import ClipSpec

    assert hub_kernels.__name__ == "transformers.integrations.hub_kernels"
    model = create_model("timesformer_base", hidden_size=16, layers=1, heads=2,
                         clip=ClipSpec(frames=4, size=32))
    assert model(torch.zeros(2, 3, 4, 32, 32)).shape == (2,)


def _python(code: str, *, safe: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    if safe:
        env["PYTHONSAFEPATH"] = "1"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_from_the_root_with_safe_path_tests_and_benchmarks_import_after_site_packages():
    """What `make test` and `make bench` do: PYTHONSAFEPATH=1 and the venv's fvcflow-dev-tree.pth."""
    code = ("import kernels, tests.media, benchmarks.reference, fvcflow.kernels; "
            "print(kernels.__file__); print(tests.media.__file__)")
    res = _python(code, safe=True)
    assert res.returncode == 0, res.stderr
    hf, media = res.stdout.split()
    assert not Path(hf).resolve().is_relative_to(ROOT / "kernels")
    assert Path(media).resolve() == ROOT / "tests" / "media.py"


def test_a_root_ahead_of_site_packages_is_one_clear_error_not_a_failed_import_deep_in_transformers():
    code = ("from fvcflow.errors import FvcError\n"
            "from fvcflow.models import create_model\n"
            "try:\n    create_model('timesformer_base', hidden_size=16, layers=1, heads=2)\n"
            "except FvcError as e:\n    print('FvcError:', e)\n")
    res = _python(code, safe=False)  # `python -c` from the root puts the root first on sys.path
    assert res.returncode == 0, res.stderr
    assert "FvcError: `import kernels` finds this checkout's" in res.stdout
    assert "PYTHONSAFEPATH=1" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
