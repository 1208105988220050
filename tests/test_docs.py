"""What a user reads stays inside the repository: no pointer to files a clone does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = "../" + "shared"           # spelled in two parts so that this file does not match itself
DOCS = ("DESIGN.md", "FEATURES.md", "ARCHITECTURE.md", "RELIABILITY.md")


def tracked_text_files() -> list[Path]:
    cmd = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths = [ROOT / p for p in out.splitlines()]
    suffixes = {".py", ".md", ".toml", ".yaml", ".sh", ".cfg", ""}
    return [p for p in paths if p.is_file() and p.suffix in suffixes]


def read_files() -> list[Path]:
    """The package (kernels/, flows/, fvcflow/), docs/, deployments/, benchmarks/, tests/, README."""
    return [p for p in tracked_text_files() if p.relative_to(ROOT).parts[0] in
            {"fvcflow", "kernels", "flows", "docs", "deployments", "benchmarks", "tests", "README.md",
             "Makefile", "pyproject.toml"}]


def test_the_scan_covers_the_package_docs_and_readme():
    names = {str(p.relative_to(ROOT)) for p in read_files()}
    assert {"README.md", "docs/ARCHITECTURE.md", "kernels/features.py", "flows/local.py"} <= names


def test_nothing_points_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in read_files()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE in line]
    assert not hits, f"references to {OUTSIDE}: {hits}"


def test_every_named_design_document_exists_where_it_is_named():
    """Outside docs/ a document is named as docs/NAME.md; inside docs/ by its bare name."""
    for name in DOCS:
        assert (ROOT / "docs" / name).is_file(), name
    pattern = re.compile(r"(\S*?)\b(" + "|".join(re.escape(d) for d in DOCS) + r")\b")
    bad = []
    for p in read_files():
        if p == Path(__file__).resolve():
            continue
        in_docs = p.relative_to(ROOT).parts[0] == "docs"
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for prefix, _name in pattern.findall(line):
                prefix = prefix.lstrip("`(\"'[")
                if prefix not in (("", "docs/") if in_docs else ("docs/",)):
                    bad.append(f"{p.relative_to(ROOT)}:{i}: {prefix}{_name}")
    assert not bad, bad


@pytest.mark.parametrize("name", ["docs/FEATURES.md", "docs/DESIGN.md"])
def test_the_definitions_are_in_the_repository(name):
    text = (ROOT / name).read_text()
    assert len(text.splitlines()) > 40
    if name.endswith("FEATURES.md"):
        for feature in ("noise_energy", "dct_ac_zero_frac", "blockiness", "codec_bpp", "rgb_to_gray"):
            assert feature in text
        assert "exactly 0.5 is **not** below" in text      # the tie rule the kernels follow
    else:
        assert "index/failures.parquet" in text and "group_id" in text


def test_the_design_documents_lake_is_the_schemas():
    """docs/DESIGN.md's "The data lake" block lists ``fvcflow.schema.LAKE`` in order: each place's
    path and what it holds."""
    from fvcflow.schema import LAKE

    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text[text.index("## The data lake"):]
    block = section.split("```\n", 2)[1]
    width = max(len(p.shown) for p in LAKE) + 2
    assert block.splitlines() == [f"{p.shown:<{width}}{p.about}".rstrip() for p in LAKE]
