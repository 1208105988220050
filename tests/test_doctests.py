"""Every library docstring example runs (numpydoc ``>>>`` examples cannot go stale).

One test per module of ``fvcflow`` (``kernels/`` and ``flows/`` included); an example that needs a
work dir, a server or minutes says ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.test_layers import ROOT, module_files

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MODULES = sorted(m for m in module_files(ROOT) if m != "fvcflow.__main__")


def _examples(module: str) -> int:
    mod = importlib.import_module(module)
    return sum(len(t.examples) for t in doctest.DocTestFinder().find(mod, module))


@pytest.mark.parametrize("module", MODULES)
def test_the_module_s_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)        # an example that writes a file writes it here
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


def test_the_library_has_examples_to_run():
    """The test above is not vacuous: the public modules carry examples."""
    counted = {m: _examples(m) for m in ("fvcflow.models.registry", "fvcflow.config",
                                         "fvcflow.kernels.features", "fvcflow.models.requirements")}
    assert all(counted.values()), counted
