"""pybpf's exceptions: one hierarchy, rooted at :class:`BPFError` (an :class:`OSError`).

Every error carries ``errno`` (with its symbolic name in the message), the
operation and the thing it was applied to (file, program, map, target), and the
last lines libbpf logged about it (``libbpf_log``).

    BPFError(OSError)
     +-- ObjectError            the .bpf.o could not be opened or parsed
     +-- LoadError              the kernel refused a program or a map
     |    +-- VerifierError     ... the verifier rejected a program (has .log)
     +-- AttachError            a program could not be attached to its hook
     +-- BPFTypeError           also a TypeError: an argument of the wrong Python type
     +-- BPFValueError          also a ValueError: an argument out of range or malformed
     +-- BPFKeyError            also a KeyError: no map, program, global or BTF type of
     |                          that name (the message names the object's own)
     +-- MapError               a map operation failed (other than a missing key)
     |    +-- MapTypeError      ... also a TypeError (and a BPFTypeError): a key or value
     |    |                     of the wrong type
     |    +-- MapValueError     ... also a ValueError (and a BPFValueError): a key or
     |    |                     value out of range
     |    +-- MapKeyError       ... also a KeyError: no such key (an array index past
     |                          the end names max_entries)
     +-- NotSupportedError      the running kernel lacks the feature (decided by probing)
     +-- BPFPermissionError     also a PermissionError: names the missing capability
     +-- ClosedError            also a ValueError: the object/link/map was closed
     +-- StateError             not in this lifecycle state: a setter after load, a live
                                operation before load (the message says what to do)
     +-- UpgradeError           a live upgrade was refused or failed; the old version
                                stays live (``.refusals``: map, field, reason each)
"""

from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Sequence

ENOTSUPP = 524  # kernel-internal "operation not supported", seen by BPF users
# what the kernel says for a bpf(2) command it does not have (EINVAL, before 5.6 for
# the batch commands) or an operation a map kind lacks (ENOTSUPP, EOPNOTSUPP...): the
# caller may fall back to another way. Such refusals come before the kernel touched
# anything, so a count in the attr is still the one given.
UNSUPPORTED = frozenset({_errno.EINVAL, _errno.ENOTSUP, _errno.EOPNOTSUPP, ENOTSUPP,
                         _errno.ENOSYS})

__all__ = [
    "BPFError",
    "ObjectError",
    "LoadError",
    "VerifierError",
    "AttachError",
    "MapError",
    "MapTypeError",
    "MapValueError",
    "MapKeyError",
    "BPFTypeError",
    "BPFValueError",
    "BPFKeyError",
    "NotSupportedError",
    "BPFPermissionError",
    "BPFNotFoundError",
    "TypeSpecError",
    "ClosedError",
    "StateError",
    "AttachWarning",
    "UpgradeError",
    "errno_name",
    "describe_errno",
]


# libbpf's own error codes (enum libbpf_errno in libbpf.h).
_LIBBPF_ERRNOS = {
    4000: ("LIBBPF_ERRNO__LIBELF", "libelf failed to read the file"),
    4001: ("LIBBPF_ERRNO__FORMAT", "invalid BPF object format"),
    4002: ("LIBBPF_ERRNO__KVERSION", "incorrect or missing 'version' section"),
    4003: ("LIBBPF_ERRNO__ENDIAN", "endianness mismatch"),
    4004: ("LIBBPF_ERRNO__INTERNAL", "internal error in libbpf"),
    4005: ("LIBBPF_ERRNO__RELOC", "relocation failed"),
    4006: ("LIBBPF_ERRNO__LOAD", "program load failed for an unknown reason"),
    4007: ("LIBBPF_ERRNO__VERIFY", "the kernel verifier rejected the program"),
    4008: ("LIBBPF_ERRNO__PROG2BIG", "program too big"),
    4009: ("LIBBPF_ERRNO__KVER", "incorrect kernel version"),
    4010: ("LIBBPF_ERRNO__PROGTYPE", "the kernel does not support this program type"),
    4011: ("LIBBPF_ERRNO__WRNGPID", "wrong pid in netlink message"),
    4012: ("LIBBPF_ERRNO__INVSEQ", "invalid netlink sequence"),
    4013: ("LIBBPF_ERRNO__NLPARSE", "netlink parsing error"),
}


def errno_name(err: int) -> str:
    """Symbolic name of an errno value: ``errno_name(2) == "ENOENT"``."""
    if err == ENOTSUPP:
        return "ENOTSUPP"
    if err in _LIBBPF_ERRNOS:
        return _LIBBPF_ERRNOS[err][0]
    return _errno.errorcode.get(err, f"errno {err}")


def describe_errno(err: int) -> str:
    """``"No such file or directory (ENOENT)"``: the meaning and the name."""
    if err == ENOTSUPP:
        return "Operation not supported by the kernel (ENOTSUPP)"
    if err in _LIBBPF_ERRNOS:
        name, text = _LIBBPF_ERRNOS[err]
        return f"{text} ({name})"
    return f"{os.strerror(err)} ({errno_name(err)})"


class BPFError(OSError):
    """Base of every pybpf error; ``.errno`` is set, ``.libbpf_log`` has libbpf's lines.
    ``.program`` / ``.map`` name the program or map concerned (None when none is)."""

    program: str | None = None
    map: str | None = None

    def __init__(self, err: int, message: str, *, libbpf_log: Sequence[str] = ()) -> None:
        super().__init__(err, message)
        self.message = message
        self.libbpf_log: list[str] = list(libbpf_log)

    def __str__(self) -> str:
        text = self.message
        # Only the lines that explain the failure; all of them are in .libbpf_log.
        # libbpf's hints about `ulimit -l` / RLIMIT_MEMLOCK are wrong on kernels
        # that charge BPF memory to the memory cgroup (5.11+): leave them out here.
        relevant = [ln for ln in self.libbpf_log
                    if ln and "ulimit -l" not in ln and "RLIMIT_MEMLOCK" not in ln
                    and "BEGIN PROG LOAD LOG" not in ln][-3:]
        if relevant and not isinstance(self, VerifierError):
            text += "\n  " + "\n  ".join(relevant)
        return text

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.errno, self.message, self.libbpf_log, self.__dict__))


def _rebuild(cls: type[BPFError], err: int, message: str, log: list[str],
             state: dict[str, object]) -> BPFError:
    exc = cls.__new__(cls)
    BPFError.__init__(exc, err, message, libbpf_log=log)
    exc.__dict__.update(state)
    return exc


class ObjectError(BPFError):
    """The object file could not be opened: not ELF, truncated, wrong machine, bad BTF..."""

    def __init__(self, err: int, message: str, *, path: str | None = None,
                 libbpf_log: Sequence[str] = ()) -> None:
        super().__init__(err, message, libbpf_log=libbpf_log)
        self.path = path


class LoadError(BPFError):
    """The kernel refused to load a program or to create a map."""

    def __init__(self, err: int, message: str, *, program: str | None = None,
                 map: str | None = None, libbpf_log: Sequence[str] = ()) -> None:
        super().__init__(err, message, libbpf_log=libbpf_log)
        self.program = program
        self.map = map


_INSN_RE = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")
_SRC_RE = re.compile(r"^; (.*?)(?: @ (\S+):(\d+))?$")


class VerifierError(LoadError):
    """The verifier rejected a program.

    ``.log`` is the whole verifier log; ``str()`` shows only the summary: the
    failing instruction, the verifier's reason and the C source line (from the
    BTF line info). ``.source_file`` / ``.source_line`` locate it.
    """

    def __init__(self, err: int, program: str, log: str, *,
                 libbpf_log: Sequence[str] = ()) -> None:
        self.log = log
        self.truncated = False
        summary = self._summarize(log)
        self.reason, self.instruction, self.source, self.source_file, self.source_line = summary
        where = ""
        if self.source_file:
            where = f" at {self.source_file}:{self.source_line}"
        msg = f"verifier rejected program '{program}'{where}: {self.reason or describe_errno(err)}"
        super().__init__(err, msg, program=program, libbpf_log=libbpf_log)

    @staticmethod
    def _summarize(log: str) -> tuple[str, str, str, str | None, int | None]:
        lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
        # The log ends with "processed N insns ..." (and maybe a "-- END" marker):
        # the reason is the last line before those that is not an instruction.
        end = len(lines)
        for i in range(len(lines) - 1, -1, -1):
            if lines[i].startswith(("processed ", "verification time", "stack depth")):
                end = i
        reason = ""
        reason_idx = end - 1
        while reason_idx >= 0:
            cand = lines[reason_idx]
            if not _INSN_RE.match(cand) and not cand.startswith(";"):
                reason = cand
                break
            reason_idx -= 1
        insn = ""
        src = ""
        src_file: str | None = None
        src_line: int | None = None
        for j in range(reason_idx - 1, -1, -1):
            cand = lines[j]
            if not insn and _INSN_RE.match(cand):
                insn = cand
            m = _SRC_RE.match(cand)
            if m and cand.startswith(";"):
                src = m.group(1).strip()
                if m.group(2):
                    src_file = m.group(2)
                    src_line = int(m.group(3))
                break
        return reason, insn, src, src_file, src_line

    def __str__(self) -> str:
        parts = [self.message]
        if self.source:
            parts.append(f"  source:      {self.source}")
        if self.instruction:
            parts.append(f"  instruction: {self.instruction}")
        parts.append(f"  (full verifier log: {len(self.log.splitlines())} lines in .log)")
        return "\n".join(parts)


class AttachError(BPFError):
    """A program could not be attached; ``.program`` and ``.target`` say to what."""

    def __init__(self, err: int, message: str, *, program: str | None = None,
                 target: str | None = None, libbpf_log: Sequence[str] = ()) -> None:
        super().__init__(err, message, libbpf_log=libbpf_log)
        self.program = program
        self.target = target


class BPFTypeError(BPFError, TypeError):
    """An argument of the wrong Python type (None for a path, a str for a count...),
    refused before any syscall; the message names the object and the parameter.
    Also a ``TypeError``."""


class BPFValueError(BPFError, ValueError):
    """An argument of the right type but not a value the call can take (out of its C
    type's range, an unknown name, a NUL byte in a path...), refused before any
    syscall; the message names the object and the parameter. Also a ``ValueError``."""


class BPFKeyError(BPFError, KeyError):
    """No such name: a map, program or global variable the object does not have, a BTF
    type the BTF lacks. The message names what was looked up and where. Also a
    ``KeyError`` (a ``LookupError``), as a mapping raises: ``BPFKeyError(ENOENT, msg)``."""


class MapError(BPFError):
    """A map operation failed (a missing key is a KeyError instead)."""

    def __init__(self, err: int, message: str, *, map: str | None = None,
                 libbpf_log: Sequence[str] = ()) -> None:
        super().__init__(err, message, libbpf_log=libbpf_log)
        self.map = map


class _MapValueProblem(MapError):
    def __init__(self, message: str, *, map: str | None = None, field: str = "",
                 type_name: str = "") -> None:
        super().__init__(_errno.EINVAL, message, map=map)
        self.field = field
        self.type_name = type_name


class MapTypeError(_MapValueProblem, BPFTypeError):
    """A key or value of the wrong Python type for the map (before any syscall):
    ``.map``, ``.field`` (``"key"``, ``"value.inner.count"``...) and ``.type_name``
    (the map's key or value C type) say which."""


class MapValueError(_MapValueProblem, BPFValueError):
    """A key or value the map's C type cannot hold (out of range, too long, unknown
    enumerator...), before any syscall; ``.map``, ``.field``, ``.type_name`` as for
    :class:`MapTypeError`."""


class MapKeyError(MapError, BPFKeyError):
    """No such key in the map (``m[k]``, ``del m[k]``, ``pop``), or an array index past
    its last element: ``.map`` and ``.key`` say which (the message also gives the
    array's ``max_entries``). Also a ``KeyError``, as a dict raises: ``.args`` is
    ``(key,)`` as a dict's; ``str()`` is the message."""

    def __init__(self, message: str, *, map: str | None = None, key: object = None,
                 err: int = _errno.ENOENT) -> None:
        # (no cooperative chain: a missing key is a common, cheap outcome of m[k])
        OSError.__init__(self, err, message)
        self.args = (key,)  # (errno stays: OSError keeps it apart)
        self.message = message
        self.libbpf_log = []
        self.map = map
        self.key = key

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild_key, (type(self), self.message, self.map, self.key,
                               self.errno or _errno.ENOENT))


def _rebuild_key(cls: type[MapKeyError], message: str, map: str | None, key: object,
                 err: int) -> MapKeyError:
    return cls(message, map=map, key=key, err=err)


class NotSupportedError(BPFError):
    """The running kernel (or the system libbpf) lacks this feature; ``.reason`` says why
    (the probe's words); the message also names ``.errno`` (what this call got)."""

    def __init__(self, message: str, *, reason: str = "", err: int = _errno.EOPNOTSUPP,
                 program: str | None = None, map: str | None = None,
                 libbpf_log: Sequence[str] = ()) -> None:
        self.reason = reason or message
        if errno_name(err) not in message:  # the message names the errno it carries
            message += f" ({describe_errno(err)})"
        super().__init__(err, message, libbpf_log=libbpf_log)
        self.program = program
        self.map = map


class BPFPermissionError(BPFError, PermissionError):
    """Not allowed: ``.missing`` names the capabilities the process lacks."""

    def __init__(self, err: int, message: str, *, missing: Sequence[str] = (),
                 libbpf_log: Sequence[str] = ()) -> None:
        super().__init__(err, message, libbpf_log=libbpf_log)
        self.missing = list(missing)


class BPFNotFoundError(BPFError, FileNotFoundError):
    """Nothing at a path pybpf was given (a pin, an object file, a source): ``.filename``
    is the path. Also a ``FileNotFoundError``."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(_errno.ENOENT, message)
        self.filename = path


class ClosedError(BPFError, ValueError):
    """The object, map, program or link was already closed."""

    def __init__(self, what: str) -> None:
        super().__init__(_errno.EBADF, f"{what} is closed")


class StateError(BPFError):
    """Not valid in the current lifecycle state: a map setter after load, a live map
    operation before load, a ``.rodata`` write after load. The message says what to do
    instead ("load the object first", "only before load")."""

    def __init__(self, message: str, *, err: int = _errno.EBUSY) -> None:
        super().__init__(err, message)


class TypeSpecError(BPFError, TypeError):
    """A value type given as a C declaration, a ctypes type or a numpy dtype cannot be
    turned into BTF: an unsupported member (a pointer, ``c_wchar``, a big-endian type...),
    a declaration that does not compile, or no clang and no cached BTF for it. The
    message names the type and member. Also a ``TypeError``."""

    def __init__(self, message: str, *, err: int = _errno.EINVAL) -> None:
        super().__init__(err, message)


class AttachWarning(UserWarning):
    """``Object.attach()`` left loaded programs unattached because their sections name
    no target (the message says which, and which ``attach_*`` call to make)."""


class UpgradeError(BPFError):
    """A live upgrade (:meth:`pybpf.Object.upgrade`) was refused or failed, and the old
    version is still live and attached. ``.refusals`` lists ``(map, field, reason)``
    for each map that cannot be carried over (``field`` is None when the whole map is
    refused); ``.map`` and ``.field`` are the first of them."""

    def __init__(self, message: str, *, refusals: Sequence[tuple[str, str | None, str]] = (),
                 err: int = _errno.EINVAL) -> None:
        super().__init__(err, message)
        self.refusals = list(refusals)
        self.map = self.refusals[0][0] if self.refusals else None
        self.field = self.refusals[0][1] if self.refusals else None
