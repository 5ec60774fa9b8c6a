"""Ring buffer consumer (BPF_MAP_TYPE_RINGBUF), over one or many ring buffer maps.

    with pybpf.RingBuffer(obj.maps["events"], callback=handle) as rb:
        while running:
            rb.poll(timeout=0.1)

``callback(data: bytes)`` is called once per record; a callback that raises
stops the poll and the exception propagates. Not thread-safe: poll from one
thread at a time.
"""

from __future__ import annotations

import errno as _errno
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._ffi import capture, error_for, ffi, lib
from .errors import BPFError, ClosedError, MapError
from .maps import Map

__all__ = ["RingBuffer"]

Callback = Callable[[bytes], Any]

_registry: dict[int, RingBuffer] = {}
_registry_lock = threading.Lock()
_next_id = 1


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _pybpf_ringbuf_sample(ctx: Any, data: Any, size: int) -> int:
    key = int(ffi.cast("uintptr_t", ctx))
    rb_id, slot = key >> 16, key & 0xFFFF
    rb = _registry.get(rb_id)
    if rb is None:
        return 0
    try:
        rb._callbacks[slot](bytes(ffi.buffer(data, size)))
    except BaseException as exc:  # noqa: BLE001 - re-raised by poll()
        rb._error = exc
        return -1  # stop consuming: libbpf leaves the rest of the ring in place
    rb.consumed += 1
    return 0


class RingBuffer:
    """Consume records from ring buffer maps; a context manager."""

    def __init__(self, *maps: Map, callback: Callback | None = None) -> None:
        global _next_id
        self._ptr: Any = None
        self._callbacks: list[Callback] = []
        self._error: BaseException | None = None
        self.consumed = 0
        """Records handed to callbacks so far."""
        with _registry_lock:
            self._id = _next_id
            _next_id += 1
            _registry[self._id] = self
        for m in maps:
            self.add(m, callback)

    def add(self, map: Map, callback: Callback | None = None) -> None:
        """Also consume ``map`` (calls ``callback`` for its records)."""
        if callback is None:
            raise TypeError("RingBuffer.add() needs a callback")
        if map.type != "ringbuf":
            raise MapError(_errno.EINVAL, f"map {map.name!r} is a {map.type} map, not a ringbuf",
                           map=map.name)
        slot = len(self._callbacks)
        self._callbacks.append(callback)
        ctx = ffi.cast("void *", (self._id << 16) | slot)
        with capture() as log:
            if self._ptr is None:
                ptr = lib.ring_buffer__new(map.fd, lib._pybpf_ringbuf_sample, ctx, ffi.NULL)
                if ptr == ffi.NULL:
                    self._callbacks.pop()
                    raise error_for(ffi.errno, f"cannot consume ring buffer {map.name!r}",
                                    kind=MapError, map=map.name, log=log)
                self._ptr = ptr
            else:
                err = lib.ring_buffer__add(self._ptr, map.fd, lib._pybpf_ringbuf_sample, ctx)
                if err:
                    self._callbacks.pop()
                    raise error_for(-err, f"cannot add ring buffer {map.name!r}", kind=MapError,
                                    map=map.name, log=log)

    def _raw(self) -> Any:
        if self._ptr is None:
            raise ClosedError("ring buffer")
        return self._ptr

    def _finish(self, rc: int) -> int:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        if rc < 0 and rc != -_errno.EINTR:
            raise error_for(-rc, "ring buffer poll failed")
        return max(rc, 0)

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds (None: forever) and consume; returns records."""
        ms = -1 if timeout is None else int(timeout * 1000)
        return self._finish(lib.ring_buffer__poll(self._raw(), ms))

    def consume(self) -> int:
        """Consume what is available without waiting; returns records."""
        return self._finish(lib.ring_buffer__consume(self._raw()))

    def fileno(self) -> int:
        """An epoll fd that becomes readable when records arrive."""
        return int(lib.ring_buffer__epoll_fd(self._raw()))

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.ring_buffer__free(ptr)
        with _registry_lock:
            _registry.pop(self._id, None)

    def __del__(self) -> None:
        try:
            self.close()
        except (BPFError, AttributeError):
            pass

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
