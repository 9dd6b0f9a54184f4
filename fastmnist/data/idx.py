"""Reading and writing IDX files, the format MNIST and its look-alikes ship in.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order.
Files may be gzip-compressed; that is decided by the gzip magic bytes, not by
the file name, so a renamed or decompressed file still reads.

Every problem with a file raises :class:`~fastmnist.errors.DataError` naming the
file, and nothing larger than what the file can really hold is ever allocated:
a header that declares absurd sizes fails before any data is read.
"""

from __future__ import annotations

import gzip
import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import hugepages
from ..errors import DataError, InputError

#: The only element type this reader accepts: unsigned bytes.
UINT8_TYPE_CODE = 0x08

#: The type codes the IDX format defines, so an unsupported one is named, not just refused.
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}

#: Refuse to read more than this, whatever a header says. EMNIST's largest split is about
#: 0.5 GiB, so 4 GiB leaves room for any MNIST-shaped data while catching nonsense headers.
MAX_DATA_BYTES = 4 << 30

_GZIP_MAGIC = b"\x1f\x8b"
#: Decompress in pieces of this size, so memory grows with the data actually present
#: rather than with what a (possibly lying) header declares.
_CHUNK = 16 << 20


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed or not.

    Parameters
    ----------
    path
        The file. Compression is detected from its first two bytes.

    Returns
    -------
    numpy.ndarray
        A C-contiguous uint8 array with the shape the header declares.

    Raises
    ------
    DataError
        The file is missing or unreadable, its magic, type code or number of
        dimensions is invalid, it holds fewer or more bytes than its header
        declares, or its gzip stream is corrupt. The message names the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    return _read_stream(stream, path, compressed_size=None)
            return _read_stream(raw, path, compressed_size=os.fstat(raw.fileno()).st_size)
    except DataError:
        raise
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({_short(exc)})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({_short(exc)})") from None


def _read_stream(stream: BinaryIO, path: Path, compressed_size: int | None) -> np.ndarray:
    """Parse the header and data from an open stream.

    ``compressed_size`` is the file's size when it is not compressed, which lets a
    wrong byte count be reported before any data is read.
    """
    magic = _read_exact(stream, 4, path, "the 4-byte magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic number starts with {magic[:2].hex()}, "
            "expected 0000)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code != UINT8_TYPE_CODE:
        kind = _TYPE_NAMES.get(type_code)
        detail = f"{kind} data is not supported" if kind else "unknown type code"
        raise DataError(
            f"{path}: IDX type code 0x{type_code:02x}: {detail}; only 0x08 (unsigned byte) is"
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions; expected 1 to 4")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, path, "the dimensions"))
    header_size = 4 + 4 * ndim
    # Python ints, so the product of four 2^32 dimensions cannot overflow. Zero dimensions
    # are left out of the bound because numpy refuses a shape like (0, 2^31, 2^31) too.
    expected, extent = 1, 1
    for d in dims:
        expected *= d
        extent *= max(d, 1)
    shape = "x".join(map(str, dims))
    if extent > MAX_DATA_BYTES:
        raise DataError(
            f"{path}: IDX header declares dimensions {shape}, more than the "
            f"{MAX_DATA_BYTES} bytes this reader accepts; the header is probably corrupt"
        )
    if compressed_size is not None:
        actual = compressed_size - header_size
        if actual != expected:
            problem = "truncated" if actual < expected else "has trailing bytes"
            raise DataError(
                f"{path}: {problem}: header declares {shape} = {expected} data bytes, "
                f"file holds {actual}"
            )
        data = hugepages.empty(expected, np.uint8)
        got = stream.readinto(data)
        if got != expected:  # the file shrank under us
            raise DataError(f"{path}: truncated: read {got} of {expected} data bytes")
    else:
        data = _read_bounded(stream, expected + 1)
        if len(data) < expected:
            raise DataError(
                f"{path}: truncated: holds {len(data)} of the {expected} data bytes its "
                f"header declares ({shape})"
            )
        if len(data) > expected:
            raise DataError(
                f"{path}: has trailing bytes after the {expected} data bytes its header "
                f"declares ({shape})"
            )
        # Onto 2 MB pages, where training reads the images at random (fastmnist.hugepages).
        array = hugepages.empty(expected, np.uint8)
        array[...] = np.frombuffer(data, dtype=np.uint8)
        data = array
    return data.reshape(dims)


def _read_exact(stream: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated IDX header: file ends inside {what}")
    return data


def _read_bounded(stream: BinaryIO, limit: int) -> bytearray:
    """Read until end of stream or ``limit`` bytes, in chunks, never asking for more."""
    data = bytearray()
    while len(data) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file, atomically.

    Parameters
    ----------
    path
        Destination. Written gzip-compressed when it ends in ``.gz``. The data goes
        to a temporary file in the same directory first, which then replaces
        ``path``, so a reader never sees a half-written file.
    array
        uint8 array with 1 to 4 dimensions.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        ``array`` is not uint8 or has an unsupported number of dimensions.
    DataError
        The file cannot be written.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise InputError(f"write_idx writes uint8 arrays only, got dtype {arr.dtype}")
    if not 1 <= arr.ndim <= 4:
        raise InputError(f"write_idx needs an array with 1 to 4 dimensions, got shape {arr.shape}")
    if any(d >= 2**32 for d in arr.shape):
        raise InputError(f"every dimension must be below 2**32, got shape {arr.shape}")
    header = bytes([0, 0, UINT8_TYPE_CODE, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = np.ascontiguousarray(arr)
    # A unique name in the same directory, so os.replace is atomic; os.open with 0o666
    # lets the umask set the final mode, as for any ordinary new file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with open(fd, "wb") as out:
                if path.name.endswith(".gz"):
                    # mtime=0 and a fixed name make the output a function of the data alone.
                    with gzip.GzipFile(
                        filename=path.name, mode="wb", fileobj=out, compresslevel=6, mtime=0
                    ) as gz:
                        gz.write(header)
                        gz.write(payload.data)
                else:
                    out.write(header)
                    out.write(payload.data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({_short(exc)})") from None
    return path


def _short(exc: BaseException) -> str:
    """An exception as one short line, for messages that must not carry tracebacks."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
