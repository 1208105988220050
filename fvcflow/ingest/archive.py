"""Safe, fast, resumable ZIP extraction (stored/deflate members, unencrypted or ZipCrypto).

The central directory is parsed with :class:`zipfile.ZipFile` for names, sizes and offsets
only; member data is streamed by :mod:`fvcflow.ingest.zipstream` with the jitted ZipCrypto
kernel (:mod:`fvcflow.kernels.zipcrypto`) and zlib, several members at a time.

Everything that could write outside the target or exhaust the disk is refused before the
first byte is written: absolute paths, ``..`` components, symlink entries, names the extraction
reserves (its manifest, its temporary files), entries whose bytes overlap another's (one
compressed member counted many times: the overlapping-entry zip bomb), a wrong password (every
encrypted member's header is checked), compression ratios no video has (per member and for the
whole archive), a total size above ``max_total`` or the free space. Each member is cut off at its
declared size, so nothing beyond the checked total is ever written. The password is taken as
bytes and never logged, stored, or put into an error message; the files of an encrypted
archive are readable by their owner only (0600).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from fvcflow.errors import ArchiveError
from fvcflow.ingest.zipstream import (
    PART_SUFFIX,
    PRIVATE_MODE,
    Manifest,
    Member,
    data_offset,
    extract_member,
    header_ok,
)

__all__ = ["ExtractResult", "extract_zip", "verify_password", "is_encrypted", "DEFAULT_MAX_RATIO"]

#: Largest uncompressed/compressed ratio accepted for a member (video compresses ~1:1).
DEFAULT_MAX_RATIO = 100.0
#: Members smaller than this are not ratio-checked (a small text file of zeros is no bomb).
RATIO_MIN_SIZE = 1 << 20
#: Largest total uncompressed size of one archive (bytes); ``extract_zip(max_total=...)`` changes it.
DEFAULT_MAX_TOTAL = 1 << 40
#: Free space kept on the target's disk beyond the archive's total uncompressed size.
SPACE_MARGIN = 64 << 20
_SUPPORTED = {zipfile.ZIP_STORED: 0, zipfile.ZIP_DEFLATED: 8}
_AES = 99
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract_zip` did: members written now, members found already complete."""

    archive: Path
    target: Path
    extracted: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_written: int


MANIFEST_PREFIX = ".fvc-extract-"


def _manifest_path(archive: Path, target: Path) -> Path:
    return target / f"{MANIFEST_PREFIX}{archive.name}.jsonl"


def _safe_dest(archive: Path, target: Path, name: str) -> Path:
    """Destination of entry ``name`` inside ``target``; refuses anything that could escape it."""
    if "\x00" in name:
        raise ArchiveError(archive, f"unsafe entry {name!r}: NUL in the name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise ArchiveError(archive, f"unsafe entry {name!r}: absolute path")
    parts = [p for p in PurePosixPath(norm).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(archive, f"unsafe entry {name!r}: '..' path component")
    if not parts:
        raise ArchiveError(archive, f"unsafe entry {name!r}: empty path")
    if parts[-1].startswith(MANIFEST_PREFIX) or parts[-1].endswith(PART_SUFFIX):
        raise ArchiveError(archive, f"unsafe entry {name!r}: a name the extraction reserves for its "
                                    f"manifest ({MANIFEST_PREFIX}*) or temporary files (*{PART_SUFFIX})")
    dest = target.joinpath(*parts)
    real_target = os.path.realpath(target)
    if os.path.commonpath([os.path.realpath(dest), real_target]) != real_target:
        raise ArchiveError(archive, f"unsafe entry {name!r}: resolves outside {target} (symlinked folder)")
    return dest


def _check_entry(archive: Path, info: zipfile.ZipInfo, max_ratio: float) -> None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(archive, f"unsafe entry {info.filename!r}: symbolic link")
    if info.compress_type == _AES:
        raise ArchiveError(archive, f"{info.filename!r} is AES-encrypted; only ZipCrypto (zip -P) and "
                                    "unencrypted archives are supported: re-pack it with ZipCrypto or "
                                    "extract it with 7-Zip and ingest the folder")
    if info.flag_bits & 0x40:
        raise ArchiveError(archive,
                           f"{info.filename!r} uses PKWARE strong encryption, which is not supported")
    if info.compress_type not in _SUPPORTED:
        raise ArchiveError(archive, f"{info.filename!r}: compression method {info.compress_type} is not "
                                    "supported (stored and deflate are)")
    if info.file_size >= RATIO_MIN_SIZE and info.file_size > max_ratio * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise ArchiveError(archive, f"{info.filename!r} compresses {ratio:.0f}:1 (limit {max_ratio:.0f}:1): "
                                    "refused as a zip bomb, no real video compresses like that")


def _check_byte(info: zipfile.ZipInfo) -> int:
    if info.flag_bits & 0x08:  # sizes in a data descriptor: the check byte is the DOS time's high byte
        h, m, s = info.date_time[3:6]
        return ((h << 11) | (m << 5) | (s // 2)) >> 8
    return info.CRC >> 24


def _check_overlaps(archive: Path, spans: list[tuple[int, int, str]]) -> None:
    """Refuse entries whose bytes (local header to end of data) overlap: one deflated member named
    by many central-directory entries writes its output once per entry (the overlapping-entry bomb)."""
    spans = sorted(spans)
    for (start, end, name), (nxt, _, other) in zip(spans, spans[1:]):
        if nxt < end:
            raise ArchiveError(archive, f"entries {name!r} and {other!r} overlap in the archive "
                                        "(shared data): refused as a zip bomb")


def _check_totals(archive: Path, members: list[Member], size: int, max_ratio: float, max_total: int) -> None:
    """The whole archive's size and ratio: many small members each under the per-member floor."""
    total = sum(m.file_size for m in members)
    if total > max_total:
        raise ArchiveError(archive, f"the members total {total / 1e6:.1f} MB, over the limit of "
                                    f"{max_total / 1e6:.1f} MB for one archive")
    if total >= RATIO_MIN_SIZE and total > max_ratio * max(size, 1):
        raise ArchiveError(archive, f"the archive expands {total / max(size, 1):.0f}:1 as a whole "
                                    f"(limit {max_ratio:.0f}:1): refused as a zip bomb")


def _plan(archive: Path, target: Path, max_ratio: float,
          max_total: int = DEFAULT_MAX_TOTAL) -> tuple[list[Member], list[Path]]:
    """Every file member checked and resolved, and the folders to create; refuses unsafe archives."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(archive,
                           f"not a ZIP archive, or truncated (no central directory): {exc}") from None
    except FileNotFoundError:
        raise ArchiveError(archive, "no such file") from None
    members, folders, seen, spans = [], [], set(), []
    size = archive.stat().st_size
    with zf, open(archive, "rb") as fh:
        for info in zf.infolist():
            dest = _safe_dest(archive, target, info.filename)
            if dest in seen:
                raise ArchiveError(archive, f"duplicate entry {info.filename!r}")
            seen.add(dest)
            _check_entry(archive, info, max_ratio)
            offset = data_offset(fh, archive, info.filename, info.header_offset, info.compress_size, size)
            spans.append((info.header_offset, offset + info.compress_size, info.filename))
            if info.is_dir():
                folders.append(dest)
                continue
            members.append(Member(
                name=info.filename, dest=dest, data_offset=offset, compress_size=info.compress_size,
                file_size=info.file_size, crc=info.CRC, method=_SUPPORTED[info.compress_type],
                encrypted=bool(info.flag_bits & 0x01), check_byte=_check_byte(info)))
    _check_overlaps(archive, spans)
    _check_totals(archive, members, size, max_ratio, max_total)
    return members, folders


def _check_password(archive: Path, members: list[Member], password: bytes | None) -> np.ndarray | None:
    encrypted = [m for m in members if m.encrypted]
    if not encrypted:
        return None
    if password is None:
        raise ArchiveError(archive, "the archive is encrypted and no password was given "
                                    "(set FVC_ZIP_PASSWORD, or enter it at the prompt)")
    if not isinstance(password, (bytes, bytearray)):
        raise TypeError("password must be bytes")
    pw = np.frombuffer(bytes(password), np.uint8)
    with open(archive, "rb") as fh:
        for m in encrypted:
            if not header_ok(fh, m, pw):
                raise ArchiveError(archive, f"wrong password (checked on {m.name!r}); nothing was extracted")
    return pw


def _check_space(archive: Path, target: Path, pending: list[Member]) -> None:
    need = sum(m.file_size for m in pending)
    existing = next(p for p in (target, *target.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need + SPACE_MARGIN > free:
        raise ArchiveError(archive,
                           f"not enough disk space in {target}: extraction needs {need / 1e6:.1f} MB "
                                    f"(+{SPACE_MARGIN >> 20} MiB margin), {free / 1e6:.1f} MB free")


def _make_private(path: Path) -> None:
    try:
        if os.stat(path, follow_symlinks=False).st_mode & 0o077:
            os.chmod(path, PRIVATE_MODE, follow_symlinks=False)
    except OSError as exc:
        raise ArchiveError(path, "cannot make it readable by its owner only: "
                                 f"{exc.strerror or exc}") from None


def _run_pool(run: Callable[[Member], None], members: list[Member], n_workers: int) -> None:
    """Run ``run`` over ``members`` in threads; on the first error, cancel the rest and raise it."""
    with ThreadPoolExecutor(n_workers, thread_name_prefix="unzip") as pool:
        futures = [pool.submit(run, m) for m in members]
        try:
            for fut in as_completed(futures):
                if fut.exception() is not None:
                    raise fut.exception()
        finally:  # an error or Ctrl-C: members not started are dropped, running ones finish
            for fut in futures:
                fut.cancel()


def verify_password(archive: str | os.PathLike, password: bytes | None) -> None:
    """Check ``password`` on every encrypted member's header (and the archive's safety) without writing.

    Raises
    ------
    ArchiveError
        Wrong or missing password, or anything :func:`extract_zip` would refuse.

    Examples
    --------
    >>> verify_password("FVC1.zip", b"...")  # doctest: +SKIP
    """
    archive = Path(archive)
    members, _ = _plan(archive, Path(tempfile.gettempdir()) / "fvc-unused-target", DEFAULT_MAX_RATIO)
    _check_password(archive, members, password)


def is_encrypted(archive: str | os.PathLike) -> bool:
    """Whether any member of ``archive`` is encrypted (so a password is needed).

    Examples
    --------
    >>> is_encrypted("FVC1.zip")  # doctest: +SKIP
    True
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            return any(i.flag_bits & 0x01 for i in zf.infolist())
    except zipfile.BadZipFile as exc:
        raise ArchiveError(archive,
                           f"not a ZIP archive, or truncated (no central directory): {exc}") from None
    except FileNotFoundError:
        raise ArchiveError(archive, "no such file") from None


def extract_zip(archive: str | os.PathLike, target: str | os.PathLike, *, password: bytes | None = None,
                max_ratio: float = DEFAULT_MAX_RATIO, max_total: int = DEFAULT_MAX_TOTAL,
                check_space: bool = True, workers: int | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> ExtractResult:
    """Extract ``archive`` into ``target`` safely, fast and resumably.

    Parameters
    ----------
    archive : path
        A ZIP file, unencrypted or ZipCrypto (``zip -P``); stored or deflated members.
    target : path
        Folder to extract into (created). Nothing is ever written outside it.
    password : bytes, optional
        Needed when members are encrypted. Checked on every encrypted member before anything
        is written; never logged or stored.
    max_ratio : float
        Refuse members (of 1 MiB or more), and archives as a whole, whose uncompressed/compressed
        ratio exceeds this.
    max_total : int
        Refuse archives whose members total more bytes than this (default 1 TiB).
    check_space : bool
        Refuse when the members still to extract do not fit in the free space (plus a margin).
    workers : int, optional
        Members extracted at once (threads; decryption and inflation release the GIL).
        Default ``min(4, os.cpu_count())``.
    progress : callable, optional
        Called as ``progress(member_name, n_done, n_total)`` after each member.

    Returns
    -------
    ExtractResult

    Raises
    ------
    ArchiveError
        Unsafe or reserved entry, overlapping entries, wrong or missing password, zip bomb (a
        member's or the whole archive's ratio, the total size), truncated/corrupt archive, CRC
        mismatch, unsupported method (AES), disk full. Partial files are removed; members
        finished before the error are kept and skipped by the next run.

    Examples
    --------
    >>> res = extract_zip("FVC1.zip", "fvc-data/raw", password=b"...")  # doctest: +SKIP
    >>> len(res.extracted) + len(res.skipped)  # doctest: +SKIP
    1612
    """
    archive, target = Path(archive), Path(target).absolute()
    members, folders = _plan(archive, target, max_ratio, max_total)
    pw = _check_password(archive, members, password)
    manifest = Manifest(_manifest_path(archive, target))
    pending = [m for m in members if not manifest.is_done(m)]
    pending_names = {m.name for m in pending}
    skipped = tuple(m.name for m in members if m.name not in pending_names)
    for m in members:   # an encrypted member extracted by an older version: made private too
        if m.encrypted and m.name not in pending_names:
            _make_private(m.dest)
    if check_space:
        _check_space(archive, target, pending)
    target.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    n_workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(pending) or 1))
    counter = iter(range(1, len(pending) + 1))

    def run(member: Member) -> None:
        extract_member(archive, member, pw)
        manifest.record(member)
        if progress is not None:
            progress(member.name, next(counter), len(pending))

    # Large members first: the pool drains evenly.
    order = sorted(pending, key=lambda m: -m.file_size)
    if n_workers == 1:
        for m in order:
            run(m)
    else:
        _run_pool(run, order, n_workers)
    return ExtractResult(archive, target, tuple(m.name for m in pending), skipped,
                         sum(m.file_size for m in pending))
