"""ZipCrypto ("traditional PKWARE encryption") keystream, jitted.

Three 32-bit keys are initialised from the password and then updated once per plaintext byte
with the CRC-32 table (APPNOTE.TXT section 6.1). The per-byte chain is inherently serial, so
the kernel is a single tight loop over a ``uint8`` buffer that decrypts in place and releases
the GIL: a caller can decrypt one ZIP member per thread.

Arrays in, arrays out: keys are a ``uint32[3]`` array, data a contiguous ``uint8`` array.
"""

from __future__ import annotations

import numba
import numpy as np

from .config import JIT

__all__ = ["CRC_TABLE", "init_keys", "decrypt", "encrypt"]

def _crc_table() -> np.ndarray:
    table = np.empty(256, np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[n] = c
    return table


#: The reflected CRC-32 table (polynomial 0xEDB88320) the ZipCrypto key update uses.
CRC_TABLE = _crc_table()


@numba.jit(**JIT)
def _update(keys: np.ndarray, table: np.ndarray, data: np.ndarray) -> None:
    k0 = np.int64(keys[0])
    k1 = np.int64(keys[1])
    k2 = np.int64(keys[2])
    for i in range(data.shape[0]):
        p = np.int64(data[i])
        k0 = np.int64(table[(k0 ^ p) & 0xFF]) ^ (k0 >> 8)
        k1 = (((k1 + (k0 & 0xFF)) & 0xFFFFFFFF) * 134775813 + 1) & 0xFFFFFFFF
        k2 = np.int64(table[(k2 ^ (k1 >> 24)) & 0xFF]) ^ (k2 >> 8)
    keys[0] = k0
    keys[1] = k1
    keys[2] = k2


@numba.jit(**JIT)
def _decrypt(keys: np.ndarray, table: np.ndarray, data: np.ndarray) -> None:
    k0 = np.int64(keys[0])
    k1 = np.int64(keys[1])
    k2 = np.int64(keys[2])
    for i in range(data.shape[0]):
        t = (k2 | 2) & 0xFFFF
        p = (np.int64(data[i]) ^ ((t * (t ^ 1)) >> 8)) & 0xFF
        data[i] = p
        k0 = np.int64(table[(k0 ^ p) & 0xFF]) ^ (k0 >> 8)
        k1 = (((k1 + (k0 & 0xFF)) & 0xFFFFFFFF) * 134775813 + 1) & 0xFFFFFFFF
        k2 = np.int64(table[(k2 ^ (k1 >> 24)) & 0xFF]) ^ (k2 >> 8)
    keys[0] = k0
    keys[1] = k1
    keys[2] = k2


@numba.jit(**JIT)
def _encrypt(keys: np.ndarray, table: np.ndarray, data: np.ndarray) -> None:
    k0 = np.int64(keys[0])
    k1 = np.int64(keys[1])
    k2 = np.int64(keys[2])
    for i in range(data.shape[0]):
        t = (k2 | 2) & 0xFFFF
        p = np.int64(data[i])
        data[i] = (p ^ ((t * (t ^ 1)) >> 8)) & 0xFF
        k0 = np.int64(table[(k0 ^ p) & 0xFF]) ^ (k0 >> 8)
        k1 = (((k1 + (k0 & 0xFF)) & 0xFFFFFFFF) * 134775813 + 1) & 0xFFFFFFFF
        k2 = np.int64(table[(k2 ^ (k1 >> 24)) & 0xFF]) ^ (k2 >> 8)
    keys[0] = k0
    keys[1] = k1
    keys[2] = k2


def _as_buffer(data: np.ndarray) -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError("data must be a 1-D uint8 numpy array")
    if not data.flags.c_contiguous or not data.flags.writeable:
        raise ValueError("data must be C-contiguous and writeable (it is decrypted in place)")
    return data


def _as_keys(keys: np.ndarray) -> np.ndarray:
    if not isinstance(keys, np.ndarray) or keys.dtype != np.uint32 or keys.shape != (3,):
        raise TypeError("keys must be a uint32 numpy array of shape (3,), as init_keys returns")
    return keys


def init_keys(password: np.ndarray) -> np.ndarray:
    """The three ZipCrypto keys after absorbing ``password``.

    Parameters
    ----------
    password : numpy.ndarray
        The password bytes, ``uint8[n]`` (``np.frombuffer(pw, np.uint8)``).

    Returns
    -------
    numpy.ndarray
        ``uint32[3]``, a fresh array (one per ZIP member: keys are consumed by decryption).

    Examples
    --------
    >>> init_keys(np.frombuffer(b"", np.uint8)).tolist()
    [305419896, 591751049, 878082192]
    """
    pw = np.ascontiguousarray(password)
    if pw.dtype != np.uint8 or pw.ndim != 1:
        raise TypeError("password must be a 1-D uint8 numpy array")
    keys = np.array([0x12345678, 0x23456789, 0x34567890], np.uint32)
    _update(keys, CRC_TABLE, pw)
    return keys


def decrypt(data: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Decrypt ``data`` in place, advancing ``keys``; returns ``keys``.

    Chunks of one member are decrypted by successive calls with the same ``keys`` array.

    Parameters
    ----------
    data : numpy.ndarray
        ``uint8[n]``, C-contiguous and writeable; overwritten with the plaintext.
    keys : numpy.ndarray
        ``uint32[3]`` from :func:`init_keys` (or a previous call); updated in place.

    Returns
    -------
    numpy.ndarray
        ``keys``, advanced past ``data``.

    Examples
    --------
    >>> pw = np.frombuffer(b"secret", np.uint8)
    >>> buf = np.frombuffer(b"hello", np.uint8).copy()
    >>> _ = encrypt(buf, init_keys(pw))  # buf now holds the ciphertext
    >>> keys = decrypt(buf, init_keys(pw))
    >>> buf.tobytes()
    b'hello'
    """
    _decrypt(_as_keys(keys), CRC_TABLE, _as_buffer(data))
    return keys


def encrypt(data: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Encrypt ``data`` in place (the inverse of :func:`decrypt`); returns the advanced ``keys``.

    Examples
    --------
    >>> pw = np.frombuffer(b"pw", np.uint8)
    >>> buf = np.zeros(4, np.uint8)
    >>> _ = encrypt(buf, init_keys(pw))
    >>> bool(buf.any())
    True
    """
    _encrypt(_as_keys(keys), CRC_TABLE, _as_buffer(data))
    return keys
