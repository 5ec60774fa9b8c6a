"""Stack samples as a pprof profile (``profile.proto``, gzipped): the input of
``go tool pprof``, Pyroscope and Parca.

The protobuf is written by hand (a few message types, varints and length-delimited
fields; no protobuf dependency). Each sample's locations run from the innermost
frame outwards: kernel frames (named as in the folded output, with ``_[k]``), then
user frames, then the command name as the root frame, so a flame graph of the
profile is the folded output's. Values: ``samples``/``count`` and
``cpu``/``nanoseconds`` (count times the sampling period); labels ``pid`` and
``comm``.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["encode_profile", "write_pprof"]


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 fields: two's complement, as protobuf encodes them
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    """A varint field (omitted when zero, as proto3 does)."""
    return _varint(field << 3) + _varint(n) if n else b""


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _packed(field: int, values: Sequence[int]) -> bytes:
    return _bytes(field, b"".join(_varint(v) for v in values)) if values else b""


class _Strings:
    def __init__(self) -> None:
        self.table: list[str] = [""]
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.table)
            self.table.append(s)
        return i


def encode_profile(samples: Iterable[Any], *, period_ns: int, duration_ns: int = 0,
                   time_ns: int | None = None) -> bytes:
    """The uncompressed ``Profile`` message of ``samples`` (objects with ``pid``,
    ``comm``, ``count``, ``user_stack``/``kernel_stack`` symbol names innermost first
    and ``user_addrs``/``kernel_addrs``, as :class:`pybpf.tools.profile.Sample`)."""
    s = _Strings()
    funcs: dict[str, int] = {}
    locs: dict[tuple[str, int], int] = {}
    func_msgs: list[bytes] = []
    loc_msgs: list[bytes] = []

    def location(name: str, addr: int) -> int:
        lid = locs.get((name, addr))
        if lid is not None:
            return lid
        fid = funcs.get(name)
        if fid is None:
            fid = funcs[name] = len(funcs) + 1
            func_msgs.append(_int(1, fid) + _int(2, s(name)) + _int(3, s(name)))
        lid = locs[(name, addr)] = len(locs) + 1
        line = _int(1, fid)
        loc_msgs.append(_int(1, lid) + _int(2, 1) + _int(3, addr) + _bytes(4, line))
        return lid

    sample_msgs = []
    for smp in samples:
        ids = []
        kaddrs = list(smp.kernel_addrs) + [0] * len(smp.kernel_stack)
        for name, addr in zip(smp.kernel_stack, kaddrs):
            ids.append(location(f"{name.replace(';', '_')}_[k]", addr))
        uaddrs = list(smp.user_addrs) + [0] * len(smp.user_stack)
        for name, addr in zip(smp.user_stack, uaddrs):
            ids.append(location(name.replace(";", "_"), addr))
        ids.append(location(smp.comm.replace(";", "_") or "?", 0))
        labels = (_bytes(3, _int(1, s("pid")) + _int(3, smp.pid))
                  + _bytes(3, _int(1, s("comm")) + _int(2, s(smp.comm))))
        sample_msgs.append(_packed(1, ids) + _packed(2, [smp.count, smp.count * period_ns])
                           + labels)
    vt_samples = _int(1, s("samples")) + _int(2, s("count"))
    vt_cpu = _int(1, s("cpu")) + _int(2, s("nanoseconds"))
    mapping = _int(1, 1) + _int(5, s("[pybpf]")) + _int(7, 1)  # has_functions
    out = bytearray()
    out += _bytes(1, vt_samples) + _bytes(1, vt_cpu)
    for m in sample_msgs:
        out += _bytes(2, m)
    out += _bytes(3, mapping)
    for m in loc_msgs:
        out += _bytes(4, m)
    for m in func_msgs:
        out += _bytes(5, m)
    for text in s.table:
        out += _bytes(6, text.encode())
    out += _int(9, time_ns if time_ns is not None else time.time_ns())
    out += _int(10, duration_ns)
    out += _bytes(11, vt_cpu) + _int(12, period_ns)
    return bytes(out)


def write_pprof(path: str | os.PathLike[str], samples: Iterable[Any], *, frequency: int,
                duration_ns: int = 0, time_ns: int | None = None) -> int:
    """Write ``samples`` taken at ``frequency`` Hz as a gzipped pprof profile to
    ``path``; returns the bytes written. Cost: one pass over the samples."""
    data = gzip.compress(encode_profile(samples, period_ns=10**9 // frequency,
                                        duration_ns=duration_ns, time_ns=time_ns))
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
