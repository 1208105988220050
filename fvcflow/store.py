"""The data lake: where each table lives, atomic Parquet writes, content hashes and cache keys.

The layout (every path relative to the work dir) is :data:`fvcflow.schema.LAKE`; :class:`Lake`
joins it to one work dir.

Every stage writes through :func:`write_parquet_atomic` (temporary file in the same folder, then
``os.replace``), so a reader never sees a half-written table and an interrupted run loses nothing
that was already published.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence

import polars as pl

from fvcflow.errors import DiskFullError, is_disk_full
from fvcflow.schema import LAKE_PATHS

#: Bump to recompute every stage's cached results (augmented and scaled videos too); part of every
#: cache key. A feature's change needs no bump here: the feature stages' configuration carries
#: ``fvcflow.schema.FEATURE_SCHEMA_VERSION``, derived from the kernel tables.
KEY_VERSION = 1

FAILURE_SCHEMA = {
    "stage": pl.Utf8,
    "path": pl.Utf8,
    "video_id": pl.Utf8,
    "reason": pl.Utf8,
    "error_type": pl.Utf8,
    "recorded_at": pl.Float64,
}


@dataclass(frozen=True)
class Lake:
    """Paths of one work directory (``Settings.home``: ``--home``, ``FVC_HOME``; default ``./fvc-data``)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Lake":
        """The work dir at ``root`` (None: ``./fvc-data``), made absolute."""
        return cls(Path(root or "fvc-data").expanduser().resolve())

    def path(self, key: str, **fields: str) -> Path:
        """The place ``key`` of the layout (:data:`fvcflow.schema.LAKE`) in this work dir; ``fields``
        fill in its ``{name}`` parts (``lake.path("cache", stage="features")``)."""
        return self.root / LAKE_PATHS[key].format(**fields)

    # index
    @property
    def index(self) -> Path:
        return self.path("index")

    @property
    def failures(self) -> Path:
        return self.path("failures")

    def unmatched(self, source: str) -> Path:
        """The unmatched videos and metadata rows of the last ingest of ``source``."""
        return self.path("unmatched", source=source)

    @property
    def raw(self) -> Path:
        """Where archives are extracted to."""
        return self.path("raw")

    @property
    def demo_corpus(self) -> Path:
        return self.path("demo_corpus")

    # stages
    @property
    def stage1_videos(self) -> Path:
        return self.path("stage1_videos")

    @property
    def stage1(self) -> Path:
        return self.path("stage1")

    @property
    def faces_tracks(self) -> Path:
        return self.path("faces_tracks")

    @property
    def faces(self) -> Path:
        return self.path("faces")

    @property
    def stage2(self) -> Path:
        return self.path("stage2")

    @property
    def stage3_videos(self) -> Path:
        return self.path("stage3_videos")

    @property
    def stage3(self) -> Path:
        return self.path("stage3")

    @property
    def stage4(self) -> Path:
        return self.path("stage4")

    @property
    def stage5(self) -> Path:
        return self.path("stage5")

    @property
    def splits(self) -> Path:
        return self.path("splits")

    @property
    def predictions(self) -> Path:
        return self.path("predictions")

    @property
    def calibrated_predictions(self) -> Path:
        return self.path("calibrated_predictions")

    @property
    def embeddings(self) -> Path:
        return self.path("embeddings")

    @property
    def resume(self) -> Path:
        return self.path("resume")

    @property
    def report(self) -> Path:
        return self.path("report")

    @property
    def report_images(self) -> Path:
        return self.path("report_images")

    @property
    def model_card(self) -> Path:
        return self.path("model_card")

    @property
    def explore(self) -> Path:
        return self.path("explore")

    @property
    def mlflow_db(self) -> Path:
        return self.path("mlflow_db")

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlartifacts(self) -> Path:
        return self.path("mlartifacts")

    @property
    def prefect_home(self) -> Path:
        return self.path("prefect_home")

    def cache_dir(self, stage: str) -> Path:
        """Per-video cached results of a stage (one small Parquet file per key)."""
        return self.path("cache", stage=stage)


def write_parquet_atomic(df: pl.DataFrame, path: str | os.PathLike, *,
                         metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``df`` to ``path`` so that readers see either the old file or the complete new one.

    The temporary file (``.<name>.<host>.<pid>.<random>.tmp``, beside ``path``) names its writer,
    so that :func:`sweep_temporary` can remove what a killed writer left; the published file gets
    the usual permissions (``0666`` less the umask), not ``mkstemp``'s owner-only ones. A full
    disk raises :class:`~fvcflow.errors.DiskFullError` naming ``path``, with the old file intact
    and the temporary one removed. ``metadata`` goes into the Parquet footer (key-value pairs).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, metadata=dict(metadata) if metadata else None)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it is synced and renamed to ``path``.

    On any error (a full disk, ``KeyboardInterrupt``) the temporary file is removed and ``path``
    is untouched; a full disk is raised as :class:`~fvcflow.errors.DiskFullError` naming ``path``.
    The temporary name follows :func:`sweep_temporary`'s convention (a killed writer's is swept).

    >>> with atomic_path("/tmp/fvc-doc/state.bin") as tmp:
    ...     _ = tmp.write_bytes(b"whole")
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp",
                                    dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # some writers lose the errno (Polars: "Invalid thrift: transport error"): ask the filesystem,
        # while the temporary file still holds its share
        full = not isinstance(exc, DiskFullError) and isinstance(exc, Exception) and (
            is_disk_full(exc) or out_of_space(path.parent))
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from None
        raise


def out_of_space(folder: str | os.PathLike, *, below: int = 1 << 20) -> bool:
    """Whether the filesystem holding ``folder`` has less than ``below`` bytes left for this user."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < below


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` is not thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def sweep_temporary(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that dead writers on this host left under ``folder``.

    A writer killed between creating its temporary file and renaming it (``kill -9``, a lost
    Dask worker) leaves ``.<name>.<host>.<pid>.<random>.tmp``; readers never open those, and
    this removes the ones whose process is gone. Files of live writers, or of other hosts
    sharing the folder, are left alone. Returns the removed paths.

    >>> sweep_temporary("/tmp/fvc-doc/cache")
    []
    """
    removed = []
    host = _host()
    for p in Path(folder).rglob(".*.tmp"):
        parts = p.name[:-len(".tmp")].rsplit(".", 3)
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or _alive(int(parts[2])):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    # the video writer's partial files: .<stem>.partial-<host>.<pid>.<random><suffix>
    for p in Path(folder).rglob(".*.partial-*"):
        tail = p.name.split(".partial-", 1)[1].split(".")
        if len(tail) < 3 or tail[0] != host or not tail[1].isdigit() or _alive(int(tail[1])):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_parquet(path: str | os.PathLike) -> pl.DataFrame | None:
    """The table at ``path``, or ``None`` when it does not exist yet.

    The file is opened once and read through that handle: a writer that replaces ``path``
    meanwhile (:func:`write_parquet_atomic`) cannot mix its new file into this read (reading by
    path may open it more than once: footer from one version, pages from another).
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        return pl.read_parquet(fh)


#: Parquet footer key holding the digest of a checked file's content (:func:`write_checked_parquet`)
CHECKSUM_KEY = "fvc.blake2b"
_CHECKED_MAGIC = b"FVCCHK1\n"
#: bytes before the payload of a checked file: magic, BLAKE2b-128 digest, payload length
CHECKED_HEADER_SIZE = len(_CHECKED_MAGIC) + 16 + 8


def _checked_header(digest: bytes, size: int) -> bytes:
    return _CHECKED_MAGIC + digest + size.to_bytes(8, "little")


def _parse_checked_header(header: bytes, path) -> tuple[bytes, int]:
    """The digest and payload length a checked file's header records; CorruptEntry when damaged."""
    n = len(_CHECKED_MAGIC)
    if header[:n] != _CHECKED_MAGIC or len(header) < CHECKED_HEADER_SIZE:
        raise CorruptEntry(path, "not a checked file (header missing or damaged)")
    return header[n:n + 16], int.from_bytes(header[n + 16:CHECKED_HEADER_SIZE], "little")


def _check_payload(path, digest: bytes, size: int, got_digest: bytes, got: int) -> None:
    if got != size:
        raise CorruptEntry(path, f"truncated ({got} of {size} bytes)" if got < size
                           else f"{got - size} bytes more than the {size} written")
    if got_digest != digest:
        raise CorruptEntry(path, "content differs from the checksum recorded when it was written")


class CorruptEntry(Exception):
    """A cached file failed its check: unreadable, truncated, or its content differs from the
    digest recorded when it was written. ``legacy``: it has no digest (an older fvcflow wrote it)."""

    def __init__(self, path: str | os.PathLike, reason: str, *, legacy: bool = False):
        self.path, self.reason, self.legacy = str(path), reason, legacy
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (_corrupt_entry, (self.path, self.reason, self.legacy))


def _corrupt_entry(path: str, reason: str, legacy: bool) -> CorruptEntry:
    return CorruptEntry(path, reason, legacy=legacy)


_PLACEHOLDER = b"0" * 32


def _digest_slot(blob: bytes) -> int | None:
    """Offset of the 32 hex digits of :data:`CHECKSUM_KEY`'s value in a Parquet file's footer."""
    if len(blob) < 12 or blob[-4:] != b"PAR1":
        return None
    footer = len(blob) - 8 - int.from_bytes(blob[-8:-4], "little")
    i = blob.rfind(CHECKSUM_KEY.encode(), max(footer, 0))
    if i < 0:
        return None
    at = i + len(CHECKSUM_KEY) + 2        # thrift compact: field header, length 32, then the value
    return at if at + 32 <= len(blob) - 8 else None


def _file_digest(blob: bytes, slot: int) -> bytes:
    """BLAKE2b-128 (hex) of the whole file with its digest slot read as zeros."""
    h = hashlib.blake2b(digest_size=16)
    h.update(blob[:slot])
    h.update(_PLACEHOLDER)
    h.update(blob[slot + 32:])
    return h.hexdigest().encode()


def write_checked_parquet(df: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` atomically as Parquet whose footer holds the digest of the whole file, for
    :func:`read_checked_parquet` to verify (cache entries: a damaged one is never read into a
    table). The digest covers every byte but its own 32 (written as zeros, hashed, filled in)."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, metadata={CHECKSUM_KEY: _PLACEHOLDER.decode()})
        with open(tmp, "r+b") as fh:
            blob = fh.read()
            slot = _digest_slot(blob)
            if slot is None or blob[slot:slot + 32] != _PLACEHOLDER:
                raise RuntimeError(f"{tmp}: cannot place the checksum in the Parquet footer")
            fh.seek(slot)
            fh.write(_file_digest(blob, slot))
    return Path(path)


def read_checked_parquet(path: str | os.PathLike,
                         columns: Sequence[str] | None = None) -> pl.DataFrame | None:
    """The table written by :func:`write_checked_parquet`, verified; ``None`` when it does not exist.

    The bytes are read once and checked against the digest recorded at write time before they
    are parsed: a truncated file or a flipped bit anywhere raises :class:`CorruptEntry` (the
    parser never sees damaged bytes). ``columns``: only those of them the file has are parsed.
    """
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    slot = _digest_slot(blob)
    if slot is None:
        if blob[:4] == b"PAR1" and blob[-4:] == b"PAR1" and CHECKSUM_KEY.encode() not in blob:
            raise CorruptEntry(path, "no checksum recorded (written by an older fvcflow)", legacy=True)
        raise CorruptEntry(path, f"truncated or damaged ({len(blob)} bytes, no intact Parquet footer)")
    if _file_digest(blob, slot) != blob[slot:slot + 32]:
        raise CorruptEntry(path, "content differs from the checksum recorded when it was written")
    if columns is not None:
        have = pl.read_parquet_schema(io.BytesIO(blob))
        return pl.read_parquet(io.BytesIO(blob), columns=[c for c in columns if c in have])
    return pl.read_parquet(io.BytesIO(blob))


def write_checked_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` atomically with its length and BLAKE2b digest in a small header.

    For cached blobs (pickled fold results, torch checkpoints, clip arrays): read them back with
    :func:`read_checked_bytes`, which refuses a truncated or altered file.
    """
    with checked_writer(path) as fh:
        fh.write(data)
    return Path(path)


def read_checked_bytes(path: str | os.PathLike) -> bytes | None:
    """The payload written by :func:`write_checked_bytes`; ``None`` when missing; raises
    :class:`CorruptEntry` when it is truncated or altered."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    digest, size = _parse_checked_header(blob[:CHECKED_HEADER_SIZE], path)
    data = blob[CHECKED_HEADER_SIZE:]
    _check_payload(path, digest, size, hashlib.blake2b(data, digest_size=16).digest(), len(data))
    return data


class _DigestWriter:
    """A write-only file object that hashes and counts what passes through it to ``fh``."""

    def __init__(self, fh: BinaryIO):
        self._fh, self._h, self.size = fh, hashlib.blake2b(digest_size=16), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._h.update(view)
        self.size += len(view)
        return self._fh.write(view)

    def flush(self) -> None:
        self._fh.flush()

    def digest(self) -> bytes:
        return self._h.digest()


@contextlib.contextmanager
def checked_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write a checked file (the format of :func:`write_checked_bytes`) atomically, streamed.

    Yields a writable file object (``write`` only, not seekable): what is written is hashed as it
    passes, and the header is filled in at the end, so a large payload (a clip array through
    ``np.save``) is never held in memory twice. The temporary file follows :func:`atomic_path`
    (swept after a killed writer; a full disk is :class:`~fvcflow.errors.DiskFullError`).

    >>> with checked_writer("/tmp/fvc-doc/blob.chk") as fh:
    ...     _ = fh.write(b"whole")
    >>> read_checked_bytes("/tmp/fvc-doc/blob.chk")
    b'whole'
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(b"\0" * CHECKED_HEADER_SIZE)
        writer = _DigestWriter(fh)
        yield writer  # type: ignore[misc]
        fh.seek(0)
        fh.write(_checked_header(writer.digest(), writer.size))


def verify_checked_file(fh: BinaryIO, path: str | os.PathLike, *, chunk: int = 1 << 20) -> int:
    """Check the open checked file ``fh`` (named ``path`` in errors) in constant memory.

    Streams the payload through BLAKE2b and compares it, and its length, with the header written
    by :func:`write_checked_bytes` / :func:`checked_writer`; raises :class:`CorruptEntry` when the
    file is truncated, extended or altered. Returns the payload's offset (:data:`CHECKED_HEADER_SIZE`);
    ``fh`` is left positioned there. Check and read through the same handle: a writer that
    replaces ``path`` meanwhile cannot slip an unchecked file in between.
    """
    fh.seek(0)
    digest, size = _parse_checked_header(fh.read(CHECKED_HEADER_SIZE), path)
    h, got = hashlib.blake2b(digest_size=16), 0
    while block := fh.read(chunk):
        h.update(block)
        got += len(block)
    _check_payload(path, digest, size, h.digest(), got)
    fh.seek(CHECKED_HEADER_SIZE)
    return CHECKED_HEADER_SIZE


def file_hash(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's content, streamed (constant memory)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(content_hash: str, stage: str, config: Mapping[str, Any]) -> str:
    """Key of one video's result in one stage: content hash + stage config + :data:`KEY_VERSION`."""
    payload = json.dumps(
        {"h": content_hash, "stage": stage, "cfg": dict(config), "schema": KEY_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def cache_keys(content_hashes: Sequence[str], stage: str, config: Mapping[str, Any], *,
               varying: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """:func:`cache_key` of many videos at once, the same keys: the JSON payload is laid out once
    and only each video's parts (its content hash, and the string values of ``varying`` config
    entries, one per video) are filled in, so that planning a million jobs costs a hash each.

    >>> cache_keys(["ab"], "scale", {"size": 224}, varying={"dst": ["v.mp4"]}) == \\
    ...     [cache_key("ab", "scale", {"size": 224, "dst": "v.mp4"})]
    True
    """
    varying = dict(varying or {})
    marks = {name: f"\x00{i}\x00" for i, name in enumerate(["\x00h", *varying])}
    cfg = {**config, **{k: marks[k] for k in varying}}
    text = json.dumps({"h": marks["\x00h"], "stage": stage, "cfg": cfg, "schema": KEY_VERSION},
                      sort_keys=True, default=str)
    quoted = {json.dumps(m): name for name, m in marks.items()}
    pattern = "(" + "|".join(re.escape(q) for q in quoted) + ")"
    pieces = re.split(pattern, text)           # literal, mark, literal, mark, ..., literal
    columns = {"\x00h": content_hashes, **varying}
    order = [quoted[p] for p in pieces[1::2]]
    literals = pieces[0::2]
    blake = hashlib.blake2b
    if all(_json_plain(columns[name]) for name in order):
        # every value is plain ASCII (hex hashes, safe file names): json.dumps(v) is '"' + v + '"',
        # so a value's JSON is laid out by one format string (a million keys in about a second)
        fmt = '"{}"'.join(lit.replace("{", "{{").replace("}", "}}") for lit in literals)
        cols = [columns[name] for name in order]
        return [blake(fmt.format(*vals).encode(), digest_size=16).hexdigest() for vals in zip(*cols)]
    out = []
    dumps = json.dumps
    for i in range(len(content_hashes)):
        parts = [literals[0]]
        for name, lit in zip(order, literals[1:]):
            parts.append(dumps(columns[name][i]))
            parts.append(lit)
        out.append(blake("".join(parts).encode(), digest_size=16).hexdigest())
    return out


_JSON_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')   # what json.dumps would escape


def _json_plain(values: Sequence) -> bool:
    """Whether every value is a str that JSON writes as itself between quotes."""
    return all(isinstance(v, str) for v in values) and not _JSON_UNSAFE.search("".join(values))


def printable_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as valid UTF-8 text: bytes that are not UTF-8 (Linux file names may hold any)
    are shown as ``\\xff`` escapes, so that Parquet, logs and artifacts can store the name.

    >>> printable_path(b"/v/caf\\xe9.mp4")
    '/v/caf\\\\xe9.mp4'
    """
    text = os.fsdecode(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def failure_row(stage: str, path: str | os.PathLike, reason: str, *, video_id: str | None = None,
                error_type: str = "VideoError") -> dict:
    """One row of ``index/failures.parquet`` (path and id made printable, see :func:`printable_path`).

    >>> failure_row("ingest", "/v/a.mp4", "empty file (0 bytes)")["reason"]
    'empty file (0 bytes)'
    """
    return {
        "stage": stage,
        "path": printable_path(path),
        "video_id": None if video_id is None else printable_path(video_id),
        "reason": reason,
        "error_type": error_type,
        "recorded_at": time.time(),
    }


@contextlib.contextmanager
def lake_lock(lake: Lake, name: str) -> Iterator[Path]:
    """Hold an exclusive advisory lock named ``name`` on the work dir (``<root>/.locks/<name>.lock``).

    Read-modify-write updates of shared tables (the index, the failures) run under it, so that two
    processes sharing a work dir never lose each other's rows. The lock is ``flock``-based: it is
    released when the holder exits or dies (no stale lock after ``kill -9``); it is advisory and
    local to the machine (NFS and object stores are not covered).

    >>> with lake_lock(Lake.at("/tmp/fvc-doc"), "index") as path:
    ...     path.name
    'index.lock'
    """
    path = lake.path("locks", name=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def record_failures(lake: Lake, rows: Iterable[Mapping[str, Any]], *,
                    stage: str | None = None) -> pl.DataFrame:
    """Merge failure rows into ``index/failures.parquet`` (under :func:`lake_lock` ``"failures"``).

    A (stage, path) pair appears once: a newer failure replaces the older one. When ``stage`` is
    given, earlier failures of that stage whose path is not in ``rows`` are removed (the input
    was fixed, or is no longer part of the corpus).

    >>> record_failures(Lake.at("/tmp/fvc-doc"), [failure_row("features", "/v/a.mp4", "no frames")],
    ...                 stage="features").height
    1
    """
    new = pl.DataFrame(list(rows), schema=FAILURE_SCHEMA)
    with lake_lock(lake, "failures"):
        old = read_parquet(lake.failures)
        if old is None:
            old = pl.DataFrame(schema=FAILURE_SCHEMA)
        if stage is not None:
            old = old.filter(pl.col("stage") != stage)
        merged = pl.concat([old, new]).unique(subset=["stage", "path"], keep="last", maintain_order=True)
        write_parquet_atomic(merged, lake.failures)
    return merged
