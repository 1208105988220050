"""The jitted ZipCrypto kernel against independent references: Python's zipfile and a naive twin."""

from __future__ import annotations

import subprocess
import zipfile
import zlib

import numpy as np
import pytest

from fvcflow.ingest.zipstream import _LOCAL_HEADER
from fvcflow.kernels.zipcrypto import CRC_TABLE, decrypt, encrypt, init_keys


def naive_decrypt(data: bytes, password: bytes) -> bytes:
    """ZipCrypto as APPNOTE 6.1 writes it, one Python int at a time (zlib's CRC table)."""
    def crc_byte(crc: int, b: int) -> int:
        return (zlib.crc32(bytes([b]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF) & 0xFFFFFFFF

    k = [0x12345678, 0x23456789, 0x34567890]

    def update(p: int) -> None:
        k[0] = crc_byte(k[0], p)
        k[1] = ((k[1] + (k[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k[2] = crc_byte(k[2], k[1] >> 24)

    for b in password:
        update(b)
    out = bytearray()
    for c in data:
        t = (k[2] | 2) & 0xFFFF
        p = c ^ (((t * (t ^ 1)) >> 8) & 0xFF)
        out.append(p)
        update(p)
    return bytes(out)


def test_crc_table_matches_zlib():
    # table[n] is the raw (uninverted) CRC register after byte n from 0; zlib inverts in and out
    expected = [zlib.crc32(bytes([n]), 0xFFFFFFFF) ^ 0xFFFFFFFF for n in range(256)]
    assert CRC_TABLE.tolist() == expected


@pytest.mark.parametrize("n", [0, 1, 12, 1000, 65537])
def test_matches_naive_twin(n):
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, n, dtype=np.uint8)
    pw = b"pa\xffss w0rd"
    buf = data.copy()
    decrypt(buf, init_keys(np.frombuffer(pw, np.uint8)))
    assert buf.tobytes() == naive_decrypt(data.tobytes(), pw)


def test_encrypt_inverts_decrypt_and_chunks_compose():
    rng = np.random.default_rng(1)
    plain = rng.integers(0, 256, 10_001, dtype=np.uint8)
    pw = np.frombuffer(b"k", np.uint8)
    cipher = plain.copy()
    encrypt(cipher, init_keys(pw))
    assert not np.array_equal(cipher, plain)
    whole = cipher.copy()
    decrypt(whole, init_keys(pw))
    np.testing.assert_array_equal(whole, plain)
    keys = init_keys(pw)
    parts = [cipher[:1].copy(), cipher[1:4097].copy(), cipher[4097:].copy()]
    for part in parts:
        keys = decrypt(part, keys)
    np.testing.assert_array_equal(np.concatenate(parts), plain)


def test_decrypts_what_zip_P_wrote_like_zipfile(tmp_path):
    """A member written by Info-ZIP ``zip -P`` (stored): kernel output == zipfile's decryption."""
    payload = np.random.default_rng(2).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (tmp_path / "m.bin").write_bytes(payload)
    subprocess.run(["zip", "-q", "-0", "-P", "Pw-1", "a.zip", "m.bin"], cwd=tmp_path, check=True)
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        info = zf.infolist()[0]
        reference = zf.read(info, pwd=b"Pw-1")
    raw = (tmp_path / "a.zip").read_bytes()
    fields = _LOCAL_HEADER.unpack_from(raw, info.header_offset)
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    buf = np.frombuffer(raw[start:start + info.compress_size], np.uint8).copy()
    decrypt(buf, init_keys(np.frombuffer(b"Pw-1", np.uint8)))
    assert buf[12:].tobytes() == reference == payload


@pytest.mark.parametrize("bad", [np.zeros(4, np.int16), np.zeros((2, 2), np.uint8), [1, 2, 3]])
def test_rejects_non_uint8_vectors(bad):
    with pytest.raises(TypeError, match="1-D uint8"):
        decrypt(bad, init_keys(np.zeros(0, np.uint8)))


def test_rejects_read_only_or_strided_buffers():
    ro = np.zeros(8, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        decrypt(ro, init_keys(np.zeros(0, np.uint8)))
    with pytest.raises(ValueError, match="C-contiguous"):
        decrypt(np.zeros(8, np.uint8)[::2], init_keys(np.zeros(0, np.uint8)))


def test_rejects_bad_keys():
    with pytest.raises(TypeError, match="keys"):
        decrypt(np.zeros(4, np.uint8), np.zeros(3, np.int64))
