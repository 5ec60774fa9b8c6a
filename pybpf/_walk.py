"""The one key walk and the one batch walk of every map kind.

Every map operation that visits all entries (``Map.keys()``/``items_raw()``, the
typed ``keys()``/``items()``/``values()`` views, ``len()``, ``clear()``,
``lookup_batch()``, ``pybpf map dump``) goes through this module, with one set of
rules:

- **Keys present for the whole walk are returned exactly once**, while other keys
  are inserted or deleted concurrently (by Python threads or BPF programs). Keys
  inserted or deleted during the walk are returned at most once. Each value is as of
  when it was read.
- Hash kinds (``hash``, ``lru_hash``, ``percpu_hash``, ``lru_percpu_hash``,
  ``hash_of_maps``) are read with ``BPF_MAP_LOOKUP_BATCH``: the kernel copies whole
  hash buckets under the bucket lock and its cursor is a bucket number, so deletes
  never move it and a key whose value is replaced (the kernel relinks it in its
  bucket) is still read once. When one bucket holds more entries than the chunk, the
  kernel says ENOSPC: the chunk is doubled and the step retried. Arrays
  (``array``, ``percpu_array``) are read the same way, by index.
- Other kinds are walked with ``BPF_MAP_GET_NEXT_KEY``. When the walk's position
  (the last key returned) is deleted, the kernel starts again from the first key, as
  bpftool and cilium's MapIterator see; this walk then resumes from the most recent
  key it returned that still exists, and never returns a key twice (it keeps the set
  of keys returned). A walk that cannot finish (a writer deleting its position or
  inserting new keys faster than it advances) raises :class:`~pybpf.MapError`
  (EAGAIN) naming the map; it never stops early in silence.
- LPM tries are walked in their own order (:func:`_trie_walk`): the walk knows which
  key GET_NEXT_KEY returns next, so it tells a restart from a step by the key alone,
  never re-reads returned keys and keeps no set of them; a value is returned only when
  the next step shows its prefix was still there after the lookup (a trie's lookup is
  a longest-prefix match).
- A walk holds the map's fd owner and checks it at each syscall: resumed after the
  map or its object was closed, it raises :class:`~pybpf.ClosedError`, even when
  another object has since been given the same fd number.
- Each syscall is made with the GIL held (``_fastpath.map_elem``/``map_batch``,
  pybpf/_native/sysmap.c), as the typed fast path makes its own: a walk beside a thread
  busy with ``m[k] = v`` takes turns with it by the switch interval instead of waiting
  up to 5 ms to get the GIL back after every syscall.

Costs: one batch syscall per chunk (4096 entries by default) for the batch kinds;
one ``GET_NEXT_KEY`` per key otherwise, plus one lookup per key for values and for
the presence of array-like kinds' slots (an LPM trie's values: one more
``GET_NEXT_KEY`` per key, to confirm each); after a restart, one ``GET_NEXT_KEY`` per
returned key tried.
"""

from __future__ import annotations

import errno as _errno
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import _fastpath as _sys
from ._ffi import error_for
from ._maptypes import TABLE
from .errors import UNSUPPORTED, MapError

if TYPE_CHECKING:
    from ._fd import FD


_T = TypeVar("_T")


class Map(Protocol):
    """What a walk reads of a :class:`pybpf.Map` (this module is below maps.py, which
    delegates its walks here: it never imports it)."""

    name: str

    @property
    def type(self) -> str: ...
    @property
    def key_size(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    def _value_size_total(self) -> int: ...
    @property
    def owner(self) -> FD: ...

__all__ = ["BATCH_KINDS", "keys", "items", "batches", "chunks", "first_key", "clear"]

# Kinds read with BPF_MAP_LOOKUP_BATCH: by hash bucket (cursor = bucket number) or by
# index. Other kinds' batch lookups (the kernel's generic one, over GET_NEXT_KEY) can
# return a key twice when the cursor key is deleted between two calls.
# (all from the one table of map-type facts, pybpf/_maptypes.py: their ``walk``)
_BUCKET_BATCH = frozenset(n for n, f in TABLE.items() if f.walk == "bucket")
_INDEX_BATCH = frozenset(n for n, f in TABLE.items() if f.walk == "index")
BATCH_KINDS = _BUCKET_BATCH | _INDEX_BATCH
_NO_KEYS = frozenset(n for n, f in TABLE.items() if f.walk == "none")
_RESUME_TRIES = 64  # returned keys tried (newest first) to resume after a restart


def _owner(m: Map) -> FD:
    """The map's fd owner, held for the whole walk (ClosedError if already closed)."""
    return m.owner


def _fail(m: Map, err: int, what: str) -> MapError:
    return error_for(err, f"map {m.name!r}: {what}", kind=MapError,  # type: ignore[return-value]
                     map=m.name)


def _check_keyed(m: Map) -> None:
    if m.type in _NO_KEYS or m.key_size == 0:
        raise MapError(_errno.EINVAL, f"map {m.name!r} ({m.type}) has no keys", map=m.name)


def _budget(returned: int) -> int:
    """Syscalls a walk may make having returned ``returned`` keys: restarts re-read
    returned keys, and under churn faster than the walk (a writer deleting its position
    at every step) that livelocks; bounding the work by the progress made means a walk
    always ends (or raises) in O(keys) syscalls."""
    return 64 * returned + 16384


def _abandon(m: Map, restarts: int, returned: int) -> MapError:
    return MapError(_errno.EAGAIN, f"map {m.name!r}: walk abandoned after {restarts} restarts "
                    f"and {returned} keys: other writers delete its position or insert new "
                    "keys faster than it advances", map=m.name)


# --- BPF_MAP_GET_NEXT_KEY ---------------------------------------------------------
def _next_key_walk(m: Map, owner: FD) -> Iterator[bytes]:
    """Every key once, by GET_NEXT_KEY, resuming after the kernel restarts (see above)."""
    ks = m.key_size
    cur = bytearray(ks)
    nxt = bytearray(ks)
    probe = bytearray(m._value_size_total())
    call, gnk, lookup = _sys.map_elem, _sys.MAP_GET_NEXT_KEY, _sys.MAP_LOOKUP_ELEM
    seen: set[bytes] = set()
    recent: deque[bytes] = deque(maxlen=_RESUME_TRIES)  # returned keys, newest last
    prev: bytearray | None = None  # then cur, the walk's position
    restarts = 0
    cap = 4 * max(m.max_entries, 1) + 1024  # keys returned
    steps = [0]  # syscalls made: the walk's work, bounded by what it returned (below)

    def present(key: Any) -> bool | None:
        """Is ``key`` in the map now? None if the kind does not let user space look."""
        steps[0] += 1
        rc = call(owner, lookup, key, probe, 0)
        if rc == 0:
            return True
        return False if rc == -_errno.ENOENT else None

    while True:
        steps[0] += 1
        if steps[0] > _budget(len(seen)):
            raise _abandon(m, restarts, len(seen))
        rc = call(owner, gnk, prev, nxt, 0)
        if rc < 0:
            if rc == -_errno.ENOENT:
                return  # past the last key (or the map is empty)
            raise _fail(m, -rc, "get_next_key failed")
        key = bytes(nxt)
        if key not in seen:
            seen.add(key)
            if len(seen) > cap:
                raise _abandon(m, restarts, len(seen))
            recent.append(key)
            cur[:] = nxt
            prev = cur
            yield key
            continue
        # A key already returned: the cursor's real successor (a hash kind relinks a
        # replaced key at the head of its bucket), or the kernel started over from the
        # first key because the cursor was deleted.
        if prev is cur and present(cur):
            cur[:] = nxt  # a real successor: go on from it
            continue
        restarts += 1
        # resume from the newest returned key still in the map: every key present for
        # the whole walk that precedes it was returned before it
        resume = None
        while recent:
            cand = recent.pop()
            ok = present(cand)
            if ok is None:
                break  # lookups not allowed for this kind: walk on from the first key
            if ok:
                resume = cand
                recent.append(cand)
                break
        cur[:] = resume if resume is not None else nxt
        prev = cur


# --- LPM tries: GET_NEXT_KEY in the trie's own order -----------------------------
def _trie_order(key_size: int) -> Callable[[bytes], int]:
    """The rank of a trie key (``u32 prefixlen`` in host order, then the address bytes)
    in the order GET_NEXT_KEY visits a trie: post-order, bit 0 before bit 1, so a prefix
    comes after every longer prefix inside it. The rank depends on the key alone, not on
    the trie's shape: a prefix's rank is (end of its address range, then its span)."""
    bits = 8 * (key_size - 4)

    def rank(key: bytes) -> int:
        span = bits - min(int.from_bytes(key[:4], sys.byteorder), bits)
        end = ((int.from_bytes(key[4:], "big") >> span) + 1) << span
        return end * (bits + 1) + span
    return rank


def _trie_walk(m: Map, owner: FD, values: bool) -> Iterator[tuple[bytes, bytes]]:
    """Every key of an LPM trie once, with its value if ``values`` (else ``b""``), by
    GET_NEXT_KEY.

    From a key still in the trie the kernel returns its successor in the order of
    :func:`_trie_order`; from a deleted key it starts over at the first key. Either way
    no key lies between the position and what came back when that ranks higher, so the
    walk keeps going; when it ranks lower, the position was deleted: the walk resumes
    from the newest key it returned that is still there (one syscall per key tried;
    a key found gone is never tried again), else from the first key, and returns only
    keys ranked above the last one returned. Keys are returned in rising rank, so never
    twice, and no set of returned keys is needed to know it.

    A trie's lookup is a longest-prefix match (a deleted /25 "is found" while its /24
    is there), so a value read by lookup is returned only when the next step shows that
    its key was still in the trie after the lookup."""
    ks = m.key_size
    rank = _trie_order(ks)
    call, gnk, lookup = _sys.map_elem, _sys.MAP_GET_NEXT_KEY, _sys.MAP_LOOKUP_ELEM
    nxt = bytearray(ks)
    first = bytearray(ks)
    vs = m._value_size_total()
    returned: list[bytes] = []  # keys returned (rising rank), gone ones dropped
    count = restarts = steps = 0
    cap = 4 * max(m.max_entries, 1) + 1024  # keys returned (a writer inserting ahead)
    hi = -1  # rank of the last key returned
    pos: bytes | None = None  # the key GET_NEXT_KEY starts from (None: the first key)
    pending: tuple[bytes, bytes] | None = None  # (pos, its value), not yet confirmed

    def step(frm: bytes | None) -> bytes | None:
        nonlocal steps
        steps += 1
        if steps > _budget(count):
            raise _abandon(m, restarts, count)
        rc = call(owner, gnk, frm, nxt, 0)
        if rc == -_errno.ENOENT:
            return None  # ``frm`` is the last key, or the trie is empty
        if rc < 0:
            raise _fail(m, -rc, "get_next_key failed")
        return bytes(nxt)

    def stays(after: bytes | None) -> bool:
        """Was the position still in the trie when GET_NEXT_KEY from it gave ``after``
        (ranked above it; None: nothing after it)? Else the kernel started over, at a
        first key that happens to rank above it: tell the two apart."""
        rc = call(owner, gnk, None, first, 0)
        if rc < 0:
            return False  # empty now
        return after is None or bytes(first) != after

    r = step(None)
    while True:
        if r is None:
            if pending is not None and stays(None):
                yield pending
            return
        rr = rank(r)
        if pos is not None and rr <= rank(pos):
            # the position was deleted and the kernel started over at the first key
            pending = None
            restarts += 1
            pos = None
            while returned:
                cand = returned[-1]
                r2 = step(cand)
                if r2 is None or rank(r2) > rank(cand):
                    pos, r = cand, r2  # in the trie (or nothing ranks below it): go on
                    break
                returned.pop()  # gone: never tried again
            continue  # from pos (None: r is the first key)
        if pending is not None:
            if stays(r):
                yield pending
            pending = None
        pos = r
        if rr > hi:
            hi = rr
            count += 1
            if count > cap:
                raise _abandon(m, restarts, count)
            returned.append(r)
            if not values:
                yield r, b""
            else:
                val = bytearray(vs)
                rc = call(owner, lookup, r, val, 0)
                if rc == 0:
                    pending = (r, bytes(val))
                elif rc != -_errno.ENOENT:
                    raise _fail(m, -rc, "lookup failed")
        r = step(pos)


def _present_items(m: Map, owner: FD, walk: Iterator[bytes], delete: bool
                   ) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) for each walked key still present when looked up (or taken)."""
    vs = m._value_size_total()
    call, lookup = _sys.map_elem, _sys.MAP_LOOKUP_ELEM
    for k in walk:
        val = bytearray(vs)
        if delete:
            rc = call(owner, _sys.MAP_LOOKUP_AND_DELETE_ELEM, k, val, 0)
            if rc < 0 and -rc in UNSUPPORTED:  # no lookup-and-delete: both steps
                rc = call(owner, lookup, k, val, 0)
                if rc == 0:
                    rc = call(owner, _sys.MAP_DELETE_ELEM, k, None, 0)
        else:
            rc = call(owner, lookup, k, val, 0)
        if rc < 0:
            if rc == -_errno.ENOENT:
                continue  # deleted (or an empty slot): not there now
            raise _fail(m, -rc, "lookup_and_delete failed" if delete else "lookup failed")
        yield k, bytes(val)


def _key_walk(m: Map, owner: FD) -> Iterator[bytes]:
    """Every key once by GET_NEXT_KEY: a trie's in its own order, others' resuming."""
    if m.type == "lpm_trie":
        return (k for k, _ in _trie_walk(m, owner, False))
    return _next_key_walk(m, owner)


# --- BPF_MAP_LOOKUP_BATCH ---------------------------------------------------------
def batches(m: Map, *, chunk: int = 4096, delete: bool = False
            ) -> Iterator[tuple[bytearray, bytearray, int]] | None:
    """``(keys, values, count)`` chunks by ``BPF_MAP_LOOKUP[_AND_DELETE]_BATCH``, or None
    if this kind is not walked by batches. Each chunk has fresh buffers (possibly longer
    than ``count`` entries): keep them as long as needed. The fd owner is taken now."""
    if m.type not in BATCH_KINDS or (delete and m.type not in _BUCKET_BATCH):
        return None
    owner = _owner(m)
    return _closed_check(owner, _batch_walk(m, owner, max(1, min(chunk, m.max_entries)),
                                            delete))


def _closed_check(owner: FD, chunks: Iterator[_T]) -> Iterator[_T]:
    """``chunks``, with the map's owner checked at every resumption and at the end: a
    batch walk resumed after its map closed raises ClosedError (after the chunk it had
    already read), and never ends as if the map had been walked."""
    for c in chunks:
        owner.get()
        yield c
    owner.get()


def _batch_walk(m: Map, owner: FD, n: int, delete: bool
                ) -> Iterator[tuple[bytearray, bytearray, int]]:
    ks, vs = m.key_size, m._value_size_total()
    cmd = _sys.MAP_LOOKUP_AND_DELETE_BATCH if delete else _sys.MAP_LOOKUP_BATCH
    tok = max(ks, 8)  # the kernel's cursor (a bucket number or a key)
    inb = bytearray(tok)
    outb = bytearray(tok)
    first = True
    while True:
        keys, vals = bytearray(ks * n), bytearray(vs * n)
        rc, got = _sys.map_batch(owner, cmd, None if first else inb, outb, keys, vals, n, 0, 0)
        err = -rc
        if err == _errno.ENOSPC and got == 0 and n < 2 * m.max_entries:
            # one hash bucket holds more entries than the chunk: grow it and redo this step
            n *= 2
            continue
        if err and err != _errno.ENOENT:
            if first and err in UNSUPPORTED:
                # a kernel without batch ops for this kind, or without the command: the
                # key walk, in chunks. (Those refusals come before anything is copied,
                # and leave the count as it was given: it is not 0.)
                yield from _chunked(_present_items(m, owner, _key_walk(m, owner),
                                                      delete), n)
                return
            raise _fail(m, err, "lookup_and_delete_batch failed" if delete
                        else "lookup_batch failed")
        c = got
        if c:
            yield keys, vals, c  # handed over as they are: no copy
        if err:  # ENOENT: that was the last chunk
            return
        inb[:] = outb
        first = False


def _chunked(pairs: Iterator[tuple[bytes, bytes]], n: int
             ) -> Iterator[tuple[bytearray, bytearray, int]]:
    keys, vals, c = bytearray(), bytearray(), 0
    for k, v in pairs:
        keys += k
        vals += v
        c += 1
        if c == n:
            yield keys, vals, c
            keys, vals, c = bytearray(), bytearray(), 0
    if c:
        yield keys, vals, c


# --- the walks every caller uses --------------------------------------------------
def keys(m: Map) -> Iterator[bytes]:
    """Every key of ``m`` as bytes, by the rules above (array-like kinds: every index
    the kernel reports, filled or not)."""
    _check_keyed(m)
    b = batches(m)
    if b is None:
        return _key_walk(m, _owner(m))
    ks = m.key_size
    return (bytes(mv[i * ks:(i + 1) * ks]) for kb, _, c in b
            for mv in (memoryview(kb),) for i in range(c))


def items(m: Map, *, delete: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` bytes of every entry present when read (``delete``: taken out);
    empty slots of array-like kinds and keys deleted meanwhile are left out."""
    _check_keyed(m)
    b = batches(m, delete=delete)
    if b is None:
        owner = _owner(m)
        if m.type == "lpm_trie" and not delete:
            return _trie_walk(m, owner, True)
        return _present_items(m, owner, _key_walk(m, owner), delete)
    ks, vs = m.key_size, m._value_size_total()
    return ((bytes(km[i * ks:(i + 1) * ks]), bytes(vm[i * vs:(i + 1) * vs]))
            for kb, vb, c in b for km, vm in ((memoryview(kb), memoryview(vb)),)
            for i in range(c))


def chunks(m: Map, *, chunk: int = 4096, delete: bool = False
           ) -> Iterator[tuple[bytearray, bytearray, int]]:
    """:func:`batches` where the kind has them, else :func:`items` gathered into chunks
    of up to ``chunk`` entries: the one form of ``lookup_batch()``."""
    b = batches(m, chunk=chunk, delete=delete)
    if b is not None:
        return b
    return _chunked(items(m, delete=delete), chunk)


def first_key(m: Map) -> bytes | None:
    """The first key GET_NEXT_KEY reports, or None: one syscall (``bool()`` of kinds
    whose keys are their entries)."""
    _check_keyed(m)
    nxt = bytearray(m.key_size)
    rc = _sys.map_elem(_owner(m), _sys.MAP_GET_NEXT_KEY, None, nxt, 0)
    if rc == 0:
        return bytes(nxt)
    if rc == -_errno.ENOENT:
        return None
    raise _fail(m, -rc, "get_next_key failed")


def clear(m: Map) -> None:
    """Delete every key the walk finds (keys deleted meanwhile are fine)."""
    owner = _owner(m)
    for k in list(keys(m)):
        rc = _sys.map_elem(owner, _sys.MAP_DELETE_ELEM, k, None, 0)
        if rc != 0 and rc != -_errno.ENOENT:
            raise _fail(m, -rc, "delete failed")
