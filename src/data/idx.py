"""Reading and writing the IDX format that MNIST and Fashion-MNIST ship in.

torchvision reads these files itself (``torchvision.datasets.mnist.read_image_file``); what no
library offers is (a) a structural check with a readable error before a truncated download
turns into a numpy reshape error deep in torchvision, and (b) a writer, which the project
needs to convert the offline MNIST pickle and which the tests use to build small data sets
in the real on-disk format.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from src.errors import UserError
from src.files import atomic_write

# The third byte of the magic number is the element type; 0x08 is unsigned byte.
_UBYTE = 0x08
IMAGES_NDIM, LABELS_NDIM = 3, 1
_GZIP_MAGIC = b"\x1f\x8b"  # the files as published are gzipped; torchvision reads them unpacked


class IdxFormatError(UserError, ValueError):
    """A file that should be IDX is truncated, corrupt or of the wrong kind."""


def read_header(path: Path) -> tuple[int, ...]:
    """The dimensions stored in an uncompressed IDX file, after checking its size agrees with them."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] == _GZIP_MAGIC:
            raise IdxFormatError(
                f"{path} is gzip-compressed, but the project reads the uncompressed IDX file under this name: "
                f"decompress it (mv {path.name} {path.name}.gz && gunzip {path.name}.gz) or run `make data`"
            )
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != _UBYTE:
            raise IdxFormatError(f"{path} is not an uncompressed unsigned-byte IDX file (bad magic number)")
        ndim = head[3]
        dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise IdxFormatError(f"{path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    actual = path.stat().st_size
    if actual != expected:
        raise IdxFormatError(f"{path} holds {actual} bytes but its header {dims} needs {expected}: the file is truncated or corrupt")
    return dims


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file, atomically (temp file, then rename)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writer expects uint8 data, got {array.dtype}")
    with atomic_write(path) as f:
        f.write(bytes([0, 0, _UBYTE, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())
