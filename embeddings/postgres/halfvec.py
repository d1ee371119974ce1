"""pgvector's halfvec in psycopg's binary protocol, so vectors travel as float16 bytes, never as
text: a dimension (uint16), a zero (uint16), then the values as big-endian float16."""

from __future__ import annotations

import struct

import numpy as np
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo

_HEADER = struct.Struct(">HH")
_BIG_ENDIAN = np.dtype(">f2")


class HalfVec:
    """A vector to write as halfvec."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


def to_bytes(values: np.ndarray) -> bytes:
    return _HEADER.pack(len(values), 0) + np.asarray(values).astype(_BIG_ENDIAN).tobytes()


def from_bytes(data) -> np.ndarray:
    dim, _ = _HEADER.unpack_from(data)
    return np.frombuffer(data, _BIG_ENDIAN, dim, _HEADER.size).astype(np.float16)


def after_id(dim: int) -> np.dtype:
    """numpy's view of int8send(id) || halfvec_send(vector), the records of a packed read (search.py)."""
    return np.dtype([("id", ">i8"), ("dim", ">u2"), ("unused", ">u2"), ("vector", _BIG_ENDIAN, (max(dim, 1),))])


def register(conn) -> None:
    """Teach conn to write HalfVec and read halfvec columns (as float16 arrays) in binary."""
    info = TypeInfo.fetch(conn, "halfvec")
    if info is None:
        return  # the extension is missing: store.connect says so before anything uses it

    class HalfVecDumper(Dumper):
        format = Format.BINARY
        oid = info.oid

        def dump(self, obj: HalfVec) -> bytes:
            return to_bytes(obj.values)

    class HalfVecLoader(Loader):
        format = Format.BINARY

        def load(self, data) -> np.ndarray:
            return from_bytes(bytes(data))

    conn.adapters.register_dumper(HalfVec, HalfVecDumper)
    conn.adapters.register_loader(info.oid, HalfVecLoader)
