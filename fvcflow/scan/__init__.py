"""The detector over many videos: ``fvc scan`` (:mod:`fvcflow.scan.core`), its inputs and its page."""

from fvcflow.scan.core import ScanResult, run_scan

__all__ = ["ScanResult", "run_scan"]
