"""The suite's own scheduling: the files that ``conftest.LONGEST_FIRST`` starts first are real files."""

from pathlib import Path

from tests.conftest import LONGEST_FIRST


def test_every_longest_first_file_exists_once():
    # a renamed or removed file would silently drop out of the order and run last again
    here = Path(__file__).parent
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    missing = [name for name in LONGEST_FIRST if not (here / name).is_file()]
    assert missing == [], f"tests/conftest.py LONGEST_FIRST names files that are not in tests/: {missing}"
