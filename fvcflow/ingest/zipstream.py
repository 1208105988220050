"""Streaming one ZIP member to disk: read, ZipCrypto-decrypt, inflate, CRC-check, rename.

Internal to :mod:`fvcflow.ingest.archive`. Memory is constant (one read buffer per member);
the decryption kernel and zlib release the GIL, so members can stream in parallel threads.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fvcflow.errors import ArchiveError
from fvcflow.kernels.zipcrypto import decrypt, init_keys

CHUNK = 1 << 20  # bytes read from the archive per step
PART_SUFFIX = ".fvc-part"  # a member streams into ".<name>.fvc-part" (archive.py reserves the suffix)
PRIVATE_MODE = 0o600  # the files of encrypted members: readable by their owner only
_MAX_OUT = 4 << 20  # most bytes one inflate step may produce
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Member:
    """One file entry of an archive, checked and resolved to its destination."""

    name: str
    dest: Path
    data_offset: int
    compress_size: int
    file_size: int
    crc: int
    method: int  # 0 stored, 8 deflate
    encrypted: bool
    check_byte: int  # last byte of the decrypted 12-byte encryption header


def data_offset(fh, archive: Path, name: str, header_offset: int, compress_size: int,
                archive_size: int) -> int:
    """Offset of a member's data after its local header; refuses bad or truncated headers."""
    fh.seek(header_offset)
    raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) < _LOCAL_HEADER.size:
        raise ArchiveError(archive,
                           f"truncated archive: local header of {name!r} is past the end of the file")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_MAGIC:
        raise ArchiveError(archive, f"corrupt archive: bad local header signature for {name!r}")
    offset = header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if offset + compress_size > archive_size:
        raise ArchiveError(archive, f"truncated archive: {name!r} extends past the end of the file")
    return offset


def header_ok(fh, member: Member, password: np.ndarray) -> bool:
    """Whether ``password`` decrypts the member's 12-byte encryption header to its check byte."""
    fh.seek(member.data_offset)
    head = np.frombuffer(fh.read(12), np.uint8).copy()
    if head.size < 12:
        return False
    decrypt(head, init_keys(password))
    return int(head[11]) == member.check_byte


class Manifest:
    """Members already extracted (name, size, CRC, mtime), one JSON line each, in the target.

    A finished member is recorded after its rename, so a rerun skips it by size and mtime
    without recomputing its CRC.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.done: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.done[entry["name"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from an interrupted run: that member is redone

    def record(self, member: Member) -> None:
        st = member.dest.stat()
        entry = {"name": member.name, "size": member.file_size, "crc": member.crc, "mtime_ns": st.st_mtime_ns}
        with self._lock:
            self.done[member.name] = entry
            with open(self.path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    def is_done(self, member: Member) -> bool:
        """Whether the destination already holds this member (size first, then manifest or CRC)."""
        try:
            st = member.dest.stat(follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not member.dest.is_file() or member.dest.is_symlink() or st.st_size != member.file_size:
            return False
        entry = self.done.get(member.name)
        if entry and entry.get("crc") == member.crc and entry.get("size") == member.file_size \
                and entry.get("mtime_ns") == st.st_mtime_ns:
            return True
        if file_crc32(member.dest) == member.crc:
            self.record(member)
            return True
        return False


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def _read_exact(fh, view: np.ndarray, archive: Path, name: str) -> None:
    got = 0
    mv = memoryview(view)
    while got < view.size:
        n = fh.readinto(mv[got:])
        if not n:
            raise ArchiveError(archive, f"truncated archive: unexpected end of file inside {name!r}")
        got += n


class _Sink:
    """Writes output chunks to the temporary file, counting bytes and the running CRC."""

    def __init__(self, out, member: Member, archive: Path):
        self.out, self.member, self.archive = out, member, archive
        self.size = 0
        self.crc = 0

    def write(self, chunk) -> None:
        n = len(chunk)
        if not n:
            return
        self.size += n
        if self.size > self.member.file_size:
            raise ArchiveError(self.archive, f"{self.member.name!r} inflates beyond its declared size "
                                             f"({self.member.file_size} bytes): refused as a zip bomb")
        self.crc = zlib.crc32(chunk, self.crc)
        self.out.write(chunk)


def _pump(fh, sink: _Sink, member: Member, password: np.ndarray | None, archive: Path) -> None:
    fh.seek(member.data_offset)
    remaining = member.compress_size
    keys = None
    if member.encrypted:
        keys = init_keys(password)
        head = np.empty(12, np.uint8)
        _read_exact(fh, head, archive, member.name)
        decrypt(head, keys)
        remaining -= 12
    inflater = zlib.decompressobj(-15) if member.method == 8 else None
    buf = np.empty(min(CHUNK, max(remaining, 1)), np.uint8)
    while remaining > 0:
        view = buf[: min(buf.size, remaining)]
        _read_exact(fh, view, archive, member.name)
        remaining -= view.size
        if keys is not None:
            decrypt(view, keys)
        if inflater is None:
            sink.write(view)
            continue
        sink.write(inflater.decompress(view, _MAX_OUT))
        while inflater.unconsumed_tail:
            sink.write(inflater.decompress(inflater.unconsumed_tail, _MAX_OUT))
    if inflater is not None:
        sink.write(inflater.flush())
        if not inflater.eof:
            raise ArchiveError(archive, f"truncated or corrupt deflate data in {member.name!r}")


def part_path(dest: Path) -> Path:
    """The temporary file a member streams into before its rename (a fixed name: reruns reuse it)."""
    return dest.with_name(f".{dest.name}{PART_SUFFIX}")


def extract_member(archive: Path, member: Member, password: np.ndarray | None) -> None:
    """Stream one member into a temporary file next to its destination, verify, then rename.

    Raises :class:`ArchiveError` on a CRC or size mismatch, truncated data, or a full disk; the
    temporary file is removed whatever happens.
    """
    tmp = part_path(member.dest)
    done = False
    try:
        member.dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                     PRIVATE_MODE if member.encrypted else 0o644)
        if member.encrypted:   # a password-protected file is its owner's only (a part file left by an
            os.fchmod(fd, PRIVATE_MODE)   # earlier run kept its old mode)
        # A buffered writer: it retries short writes, so every byte counted is on disk or raised.
        with open(fd, "wb", buffering=CHUNK) as out, open(archive, "rb", buffering=0) as fh:
            sink = _Sink(out, member, archive)
            _pump(fh, sink, member, password, archive)
        if sink.size != member.file_size:
            raise ArchiveError(archive, f"{member.name!r}: wrote {sink.size} bytes, the archive declares "
                                        f"{member.file_size}")
        if sink.crc != member.crc:
            raise ArchiveError(archive, f"{member.name!r}: CRC mismatch (corrupt data"
                                        f"{' or wrong password' if member.encrypted else ''})")
        os.replace(tmp, member.dest)
        done = True
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise ArchiveError(archive, f"disk full while extracting {member.name!r} to {member.dest}; "
                                        "free some space and rerun (finished members are kept)") from None
        raise ArchiveError(archive, f"cannot write {member.dest}: {exc.strerror or exc}") from None
    finally:
        if not done:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
