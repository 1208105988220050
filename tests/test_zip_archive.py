"""Safe, resumable ZIP extraction: correct bytes, and every refusal with nothing written."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fvcflow.errors import ArchiveError
from fvcflow.ingest.archive import extract_zip, is_encrypted, verify_password
from fvcflow.kernels.zipcrypto import encrypt, init_keys
from tests.media import write_video

PW = b"Tst-pw-4417"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _visible(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in _files(root).items() if not Path(k).name.startswith(".")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A ``zip -P`` archive of a real video, incompressible bytes (stored) and text (deflated)."""
    src = tmp_path_factory.mktemp("src")
    write_video(src / "clips" / "a" / "video.mp4", n=10, width=64, height=48)
    (src / "clips" / "noise.bin").write_bytes(np.random.default_rng(0).bytes(1_500_000))
    (src / "clips" / "b").mkdir()
    (src / "clips" / "b" / "notes.txt").write_bytes(b"the same line again\n" * 20_000)
    (src / "clips" / "empty.txt").write_bytes(b"")
    subprocess.run(["zip", "-q", "-r", "-P", PW.decode(), "c.zip", "clips"], cwd=src, check=True)
    return src / "c.zip", _files(src / "clips")


def _crafted(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _patch_central(path: Path, name: str, *, file_size: int | None = None, method: int | None = None) -> None:
    """Rewrite a member's declared size or method in both its local and central headers."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46: central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 4)
    for pos, size_off, method_off in ((local, 22, 8), (central, 24, 10)):
        if file_size is not None:
            struct.pack_into("<I", raw, pos + size_off, file_size)
        if method is not None:
            struct.pack_into("<H", raw, pos + method_off, method)
    path.write_bytes(bytes(raw))


def test_extracts_zip_P_archive_byte_exact(corpus, tmp_path):
    archive, expected = corpus
    assert is_encrypted(archive)
    res = extract_zip(archive, tmp_path / "out", password=PW, workers=1)
    got = _visible(tmp_path / "out" / "clips")
    assert got == expected
    assert sorted(res.extracted) == sorted(f"clips/{k}" for k in expected) and res.skipped == ()
    assert res.bytes_written == sum(len(v) for v in expected.values())
    with zipfile.ZipFile(archive) as zf:  # both stored and deflated members were exercised
        assert {i.compress_type for i in zf.infolist() if not i.is_dir()} == {0, 8}


def test_threads_give_the_same_files(corpus, tmp_path):
    archive, expected = corpus
    extract_zip(archive, tmp_path / "out", password=PW, workers=3)
    assert _visible(tmp_path / "out" / "clips") == expected


def test_unencrypted_archive_needs_no_password(tmp_path):
    arc = _crafted(tmp_path / "plain.zip", [("dir/x.txt", b"hello " * 1000), ("y.bin", b"\x00\x01")])
    assert not is_encrypted(arc)
    extract_zip(arc, tmp_path / "out")
    assert _visible(tmp_path / "out") == {"dir/x.txt": b"hello " * 1000, "y.bin": b"\x00\x01"}


def _zipcrypto_by_hand(path: Path, name: str, data: bytes, password: bytes) -> Path:
    """One stored ZipCrypto member *without* a data descriptor: the check byte is the CRC's high byte."""
    crc = zlib.crc32(data)
    head = np.frombuffer(bytes(range(11)) + bytes([crc >> 24]), np.uint8).copy()
    body = np.frombuffer(data, np.uint8).copy()
    keys = encrypt(head, init_keys(np.frombuffer(password, np.uint8)))
    encrypt(body, keys)
    payload, fname, size = head.tobytes() + body.tobytes(), name.encode(), len(data)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 1, 0, 0, 0x21, crc, len(payload), size,
                        len(fname), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 1, 0, 0, 0x21, crc, len(payload),
                          size,
                          len(fname), 0, 0, 0, 0, 0o644 << 16, 0)
    cd_offset = len(local) + len(fname) + len(payload)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(fname), cd_offset, 0)
    path.write_bytes(local + fname + payload + central + fname + end)
    return path


def test_check_byte_from_crc_when_there_is_no_data_descriptor(tmp_path):
    data = np.random.default_rng(5).bytes(200_000)
    arc = _zipcrypto_by_hand(tmp_path / "nodd.zip", "v.mp4", data, PW)
    with zipfile.ZipFile(arc) as zf:  # the independent reader agrees the archive is right
        assert not zf.getinfo("v.mp4").flag_bits & 0x08
        assert zf.read("v.mp4", pwd=PW) == data
    with pytest.raises(ArchiveError, match="wrong password"):
        extract_zip(arc, tmp_path / "bad", password=PW + b"x")
    assert not (tmp_path / "bad").exists()
    extract_zip(arc, tmp_path / "out", password=PW)
    assert (tmp_path / "out" / "v.mp4").read_bytes() == data


def test_wrong_password_writes_nothing_and_hides_the_password(corpus, tmp_path):
    archive, _ = corpus
    bad = b"not-the-Pw-9"
    with pytest.raises(ArchiveError, match="wrong password") as err:
        extract_zip(archive, tmp_path / "out", password=bad)
    assert bad.decode() not in str(err.value) and PW.decode() not in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArchiveError, match="wrong password"):
        verify_password(archive, bad)
    verify_password(archive, PW)


def test_missing_password_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(ArchiveError, match="FVC_ZIP_PASSWORD"):
        extract_zip(corpus[0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, why", [
    ("../evil.txt", "'..' path component"),
    ("a/../../evil.txt", "'..' path component"),
    ("/etc/evil.txt", "absolute path"),
    ("C:/evil.txt", "absolute path"),
    ("..\\evil.txt", "'..' path component"),
])
def test_refuses_paths_escaping_the_target(tmp_path, name, why):
    arc = _crafted(tmp_path / "slip.zip", [("good.txt", b"fine"), (name, b"evil")])
    target = tmp_path / "t" / "out"
    with pytest.raises(ArchiveError, match=why) as err:
        extract_zip(arc, target)
    assert str(arc) in str(err.value)
    assert not target.exists()
    assert [p.name for p in tmp_path.rglob("evil*")] == []


def test_refuses_symlink_entries(tmp_path):
    link = zipfile.ZipInfo("link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    arc = _crafted(tmp_path / "sym.zip", [("ok.txt", b"x"), (link, b"/etc/passwd")])
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_zip(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_entries_through_a_symlinked_folder_in_the_target(tmp_path):
    target, outside = tmp_path / "out", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "sub").symlink_to(outside)
    arc = _crafted(tmp_path / "a.zip", [("sub/x.txt", b"x")])
    with pytest.raises(ArchiveError, match="resolves outside"):
        extract_zip(arc, target)
    assert list(outside.iterdir()) == []


def test_file_where_a_folder_must_go_is_a_clear_error(tmp_path):
    arc = _crafted(tmp_path / "clash.zip", [("a", b"file"), ("a/b.txt", b"x")])
    with pytest.raises(ArchiveError, match=r"cannot write .*a/b.txt"):
        extract_zip(arc, tmp_path / "out", workers=1)


def test_refuses_zip_bomb_by_ratio(tmp_path):
    arc = _crafted(tmp_path / "bomb.zip", [("zeros.bin", bytes(50_000_000))])
    assert arc.stat().st_size < 200_000
    with pytest.raises(ArchiveError, match=r"compresses \d+:1 \(limit 100:1\)"):
        extract_zip(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_member_inflating_past_its_declared_size(tmp_path):
    arc = _crafted(tmp_path / "liar.zip", [("zeros.bin", bytes(3_000_000))])
    _patch_central(arc, "zeros.bin", file_size=1000)  # under the ratio check's size floor
    with pytest.raises(ArchiveError, match="inflates beyond its declared size"):
        extract_zip(arc, tmp_path / "out")
    assert _files(tmp_path / "out") == {}


def test_refuses_aes_members_with_a_clear_message(tmp_path):
    arc = _crafted(tmp_path / "aes.zip", [("v.mp4", b"x" * 100)])
    _patch_central(arc, "v.mp4", method=99)
    with pytest.raises(ArchiveError, match="AES-encrypted; only ZipCrypto"):
        extract_zip(arc, tmp_path / "out")


def test_refuses_truncated_archives(corpus, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(corpus[0].read_bytes()[: corpus[0].stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        extract_zip(cut, tmp_path / "out", password=PW)
    assert not (tmp_path / "out").exists()


def test_refuses_bad_local_header(tmp_path):
    arc = _crafted(tmp_path / "bad.zip", [("a.txt", b"a" * 100), ("b.txt", b"b" * 100)])
    raw = bytearray(arc.read_bytes())
    second = raw.index(b"PK\x03\x04", 4)
    raw[second:second + 4] = b"XXXX"
    arc.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="bad local header signature for 'b.txt'"):
        extract_zip(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_crc_mismatch_leaves_no_partial_file(tmp_path):
    arc = _crafted(tmp_path / "crc.zip", [("a.txt", b"abc" * 1000)])
    raw = bytearray(arc.read_bytes())
    with zipfile.ZipFile(arc) as zf:
        info = zf.getinfo("a.txt")
    for pos in (raw.index(b"PK\x03\x04") + 14, raw.index(b"PK\x01\x02") + 16):
        struct.pack_into("<I", raw, pos, info.CRC ^ 1)
    arc.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="CRC mismatch"):
        extract_zip(arc, tmp_path / "out")
    assert _files(tmp_path / "out") == {}


def test_resume_rewrites_only_the_missing_member(corpus, tmp_path):
    archive, expected = corpus
    out = tmp_path / "out"
    extract_zip(archive, out, password=PW)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
    victim = out / "clips" / "a" / "video.mp4"
    victim.unlink()
    (victim.parent / ".video.mp4.fvc-part").write_bytes(b"half of it")  # left by the interruption
    res = extract_zip(archive, out, password=PW)
    assert res.extracted == ("clips/a/video.mp4",)
    assert len(res.skipped) == len(expected) - 1
    after = {p: p.stat().st_mtime_ns for p in before}
    assert {p for p in before if after[p] != before[p]} == {victim}
    assert _visible(out / "clips") == expected


def test_resume_redoes_a_same_size_file_with_other_content(corpus, tmp_path):
    archive, expected = corpus
    out = tmp_path / "out"
    extract_zip(archive, out, password=PW)
    txt = out / "clips" / "b" / "notes.txt"
    txt.write_bytes(b"X" * txt.stat().st_size)  # same size, new mtime: the manifest no longer vouches
    res = extract_zip(archive, out, password=PW)
    assert res.extracted == ("clips/b/notes.txt",)
    assert txt.read_bytes() == expected["b/notes.txt"]


def _tmpfs(path: Path, size: str):
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")


def test_full_disk_is_refused_before_writing(tmp_path):
    arc = _crafted(tmp_path / "big.zip", [("noise.bin", np.random.default_rng(1).bytes(3_000_000))])
    disk = tmp_path / "disk"
    _tmpfs(disk, "1m")
    try:
        with pytest.raises(ArchiveError, match="not enough disk space"):
            extract_zip(arc, disk / "out")
        assert not (disk / "out").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_disk_filling_up_midway_names_archive_and_target(tmp_path):
    arc = _crafted(tmp_path / "big.zip", [("noise.bin", np.random.default_rng(1).bytes(3_000_000))])
    disk = tmp_path / "disk"
    _tmpfs(disk, "1m")
    try:
        with pytest.raises(ArchiveError, match="disk full") as err:
            extract_zip(arc, disk / "out", check_space=False)
        assert str(arc) in str(err.value) and str(disk / "out" / "noise.bin") in str(err.value)
        assert _files(disk / "out") == {}  # the partial temp file is gone
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ------------------------------------------------------------------ hostile archives (issue 26)
def _overlapping(path: Path, n: int = 40, size: int = (1 << 20) - 4096) -> Path:
    """One deflated member just under 1 MiB, named by ``n`` central-directory entries that all
    point at its local header: each entry alone passes the per-member checks."""
    _crafted(path, [("m00.bin", bytes(size))])
    raw = path.read_bytes()
    eocd = raw.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", raw, eocd + 12)
    record = raw[cd_offset: cd_offset + cd_size]
    assert record[46:53] == b"m00.bin"
    entries = b"".join(record[:46] + f"m{i:02d}.bin".encode() + record[53:] for i in range(n))
    end = bytearray(raw[eocd:])
    struct.pack_into("<HHII", end, 8, n, n, len(entries), cd_offset)
    path.write_bytes(raw[:cd_offset] + entries + bytes(end))
    return path


def test_refuses_overlapping_entries_writing_nothing(tmp_path):
    arc = _overlapping(tmp_path / "overlap.zip")
    with zipfile.ZipFile(arc) as zf:   # the crafted archive really is the bomb of the issue
        infos = zf.infolist()
    assert len(infos) == 40 and len({i.header_offset for i in infos}) == 1
    assert arc.stat().st_size < 5_000 and sum(i.file_size for i in infos) > 40_000_000
    assert all(i.file_size < (1 << 20) for i in infos)   # each under the per-member ratio floor
    overlap = r"overlap\.zip: entries 'm\d\d\.bin' and 'm\d\d\.bin' overlap"
    with pytest.raises(ArchiveError, match=overlap) as exc:
        extract_zip(arc, tmp_path / "out", check_space=False)
    assert "zip bomb" in str(exc.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArchiveError, match="overlap"):
        verify_password(arc, None)


def test_refuses_an_archive_whose_total_ratio_is_a_bomb(tmp_path):
    """Forty members of zeros, each under the per-member floor: the archive as a whole is refused."""
    arc = _crafted(tmp_path / "many.zip", [(f"z{i:02d}.bin", bytes(1_000_000)) for i in range(40)])
    with pytest.raises(ArchiveError, match=r"many\.zip: the archive expands \d+:1 as a whole \(limit 100:1"):
        extract_zip(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_an_archive_over_the_total_size_cap(corpus, tmp_path):
    total = sum(len(v) for v in corpus[1].values())
    with pytest.raises(ArchiveError, match=r"c\.zip: the members total 1\.\d MB, over the limit of 1\.0 MB"):
        extract_zip(corpus[0], tmp_path / "out", password=PW, max_total=1_000_000)
    assert not (tmp_path / "out").exists()
    res = extract_zip(corpus[0], tmp_path / "out", password=PW, max_total=total)   # at the cap: fine
    assert res.bytes_written == total


@pytest.mark.parametrize("name", [".fvc-extract-evil.zip.jsonl", "sub/.fvc-extract-x.jsonl",
                                  ".a.mp4.fvc-part"])
def test_refuses_members_named_like_the_manifest_or_a_part_file(tmp_path, name):
    arc = _crafted(tmp_path / "evil.zip", [("a.mp4", b"v" * 100), (name, b'{"name": "a.mp4"}\n')])
    with pytest.raises(ArchiveError, match="a name the extraction reserves"):
        extract_zip(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_files_of_an_encrypted_archive_are_their_owners_only(corpus, tmp_path):
    res = extract_zip(corpus[0], tmp_path / "out", password=PW, workers=2)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) == len(corpus[1]) == len(res.extracted)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    # a file an older version extracted world-readable is made private by the next run
    video = tmp_path / "out" / "clips" / "a" / "video.mp4"
    video.chmod(0o644)
    extract_zip(corpus[0], tmp_path / "out", password=PW)
    assert stat.S_IMODE(video.stat().st_mode) == 0o600


def test_files_of_a_plain_archive_keep_the_usual_mode(tmp_path):
    arc = _crafted(tmp_path / "plain.zip", [("a.txt", b"abc")])
    extract_zip(arc, tmp_path / "out")
    mode = stat.S_IMODE((tmp_path / "out" / "a.txt").stat().st_mode)
    assert mode == 0o644 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
