"""Checks of the Python arguments of public calls: the one place that turns an
argument a call cannot take into a pybpf error naming the object and the parameter.

Each check takes ``what``, the words that name the argument in the message
(``"program 'mark': ifindex"``), and returns the value converted (an ``int`` in
the C type's range, a ``str`` path without a NUL byte, a finite timeout) or raises
:class:`~pybpf.BPFTypeError` (wrong Python type) / :class:`~pybpf.BPFValueError`
(out of range, malformed) before any syscall. A conversion that raises in user code
(``__index__``, ``__fspath__``) is wrapped, chained with ``from``; KeyboardInterrupt,
SystemExit and MemoryError pass through untouched.
"""

from __future__ import annotations

import errno as _errno
import math
import operator
import os
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import (
    BPFError,
    BPFNotFoundError,
    BPFPermissionError,
    BPFTypeError,
    BPFValueError,
    errno_name,
)

__all__ = ["C_RANGES", "BARE", "c_int", "fd_or_path", "path_arg", "name_arg", "timeout_arg",
           "kconfig_text",
           "choice", "user_raised", "named"]

BARE = (TypeError, ValueError, ArithmeticError, AttributeError, LookupError, struct.error,
        OSError)
"""The Python errors a public call must not let out bare: :func:`named` turns them into
pybpf errors naming the object (used where a class's public calls are wrapped)."""

C_RANGES = {
    "u8": (0, (1 << 8) - 1), "u16": (0, (1 << 16) - 1), "u32": (0, (1 << 32) - 1),
    "u64": (0, (1 << 64) - 1), "s32": (-(1 << 31), (1 << 31) - 1),
    "s64": (-(1 << 63), (1 << 63) - 1), "fd": (0, (1 << 31) - 1),
    "ifindex": (1, (1 << 31) - 1), "pid": (0, (1 << 31) - 1),
}
"""The range each C type name of :func:`c_int` stands for (``fd``: an open file
descriptor number; ``ifindex``: a network interface index, from 1)."""


def _tname(value: object) -> str:
    return type(value).__name__


def user_raised(exc: Exception, what: str, value: object) -> BPFTypeError:
    """The pybpf error for user code (``__index__``, ``__fspath__``, ``__bytes__``...)
    that raised ``exc`` while pybpf converted ``value`` for ``what``: raise it
    ``from exc``. MemoryError is re-raised as it is."""
    if isinstance(exc, MemoryError):
        raise exc
    return BPFTypeError(_errno.EINVAL, f"{what}: converting {_tname(value)} "
                                      f"{value!r:.60} raised {_tname(exc)}: {exc}")


def named(exc: BaseException, who: str) -> BaseException:
    """``exc`` if it is a pybpf error (or not one of :data:`BARE`), else the pybpf error
    that names ``who`` ("program 'mark': attach_tc") and says what ``exc`` said: a
    BPFTypeError for a TypeError or AttributeError, a BPFError with its errno for an
    OSError, a BPFValueError otherwise. Raise it ``from exc``."""
    if isinstance(exc, BPFError) or not isinstance(exc, BARE):
        return exc
    if isinstance(exc, OSError):
        err = exc.errno or _errno.EIO
        text = f"{who}: {exc.strerror or exc} ({errno_name(err)})"
        if err == _errno.ENOENT:
            return BPFNotFoundError(text, str(exc.filename or ""))
        if err in (_errno.EPERM, _errno.EACCES):
            return BPFPermissionError(err, text)
        return BPFError(err, text)
    cls = BPFTypeError if isinstance(exc, (TypeError, AttributeError)) else BPFValueError
    return cls(_errno.EINVAL, f"{who}: {exc}")


def choice(value: Any, table: Mapping[str, Any] | Iterable[str], what: str) -> Any:
    """``table[value]`` (or ``value``, when ``table`` is a collection of names) for a
    name among ``table``'s; BPFValueError listing them otherwise."""
    try:
        if value in table:
            return table[value] if isinstance(table, Mapping) else value
    except TypeError:  # unhashable
        pass
    names = list(table)
    want = f"{names[0]!r} or {names[1]!r}" if len(names) == 2 else f"one of {sorted(names)}"
    raise BPFValueError(_errno.EINVAL, f"{what} must be {want}, not {value!r:.60}")


def c_int(value: Any, what: str, ctype: str = "u32", *, lo: int | None = None,
          hi: int | None = None, want: str | None = None) -> int:
    """``value`` as an ``int`` in the range of the C type ``ctype`` (a key of
    :data:`C_RANGES`), narrowed by ``lo``/``hi``. Accepts ints and objects with
    ``__index__`` (not floats, not str, not None). ``want`` words the errors as
    "WHAT must be WANT, got VALUE" instead of naming the range."""
    if not isinstance(value, int):
        if not hasattr(type(value), "__index__"):
            raise BPFTypeError(_errno.EINVAL, f"{what} must be {want}, got {value!r:.60}"
                               if want else f"{what}: expected int, got {_tname(value)} "
                                            f"{value!r:.60}")
        try:
            value = operator.index(value)
        except Exception as e:
            raise user_raised(e, what, value) from e
    low, high = C_RANGES[ctype]
    low = low if lo is None else max(low, lo)
    high = high if hi is None else min(high, hi)
    if not low <= value <= high:
        if want:
            raise BPFValueError(_errno.EINVAL, f"{what} must be {want}, got {value}")
        raise BPFValueError(_errno.EINVAL, f"{what}: {value} is out of range ({ctype}: "
                                           f"{low} to {high})")
    return int(value)


def fd_or_path(value: Any, what: str) -> tuple[int | None, str]:
    """``value`` given as an open fd (an int: ``(fd, "fd N")``) or as a path (``(None,
    path)``), checked: the fd in range, the path a str without NUL."""
    if isinstance(value, int) and not isinstance(value, bool):
        fd = c_int(value, f"{what} fd", "fd")
        return fd, f"fd {fd}"
    return None, path_arg(value, what)


def path_arg(value: Any, what: str, *, allow_empty: bool = False) -> str:
    """``value`` (a str, bytes or os.PathLike) as a ``str`` path: None, other types, an
    embedded NUL byte and (unless ``allow_empty``) "" are refused."""
    if value is None or not isinstance(value, (str, bytes, os.PathLike)):
        raise BPFTypeError(_errno.EINVAL, f"{what}: expected a path (str or os.PathLike), got "
                               f"{_tname(value)} {value!r:.60}")
    try:
        path = os.fsdecode(os.fspath(value))
    except (TypeError, ValueError, UnicodeError) as e:
        raise BPFTypeError(_errno.EINVAL, f"{what}: {value!r:.60} is not a path ({e})") from e
    except Exception as e:
        raise user_raised(e, what, value) from e
    if "\0" in path:
        raise BPFValueError(_errno.EINVAL, f"{what}: path {path!r} holds a NUL byte")
    if not path and not allow_empty:
        raise BPFValueError(_errno.EINVAL, f"{what}: the path is empty")
    return path


def name_arg(value: Any, what: str, *, allow_empty: bool = False) -> str:
    """``value`` as a name handed to C (a function, tracepoint, interface...): a
    non-empty ``str`` without a NUL byte."""
    if not isinstance(value, str):
        raise BPFTypeError(_errno.EINVAL, f"{what}: expected a name (str), got {_tname(value)} "
                               f"{value!r:.60}")
    if "\0" in value:
        raise BPFValueError(_errno.EINVAL, f"{what}: {value!r} holds a NUL byte")
    if not value and not allow_empty:
        raise BPFValueError(_errno.EINVAL, f"{what}: the name is empty")
    return value


def timeout_arg(value: Any, what: str) -> float | None:
    """``value`` as a timeout in seconds: None or +inf (wait forever) or a number that is
    not NaN; a negative one counts as 0 (do not wait)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BPFTypeError(_errno.EINVAL, f"{what}: expected seconds (a number or None), got "
                               f"{_tname(value)} {value!r:.60}")
    if math.isnan(value):
        raise BPFValueError(_errno.EINVAL, f"{what}: the timeout is NaN")
    if value == math.inf:
        return None
    return float(value)


_KCONFIG_NAME = re.compile(r"CONFIG_[A-Za-z0-9_]+\Z")
_KCONFIG_VALUE = re.compile(r'(?:[ynm]|[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)'
                            r'|"[^"\n\0]*")\Z')


def kconfig_text(kconfig: Any, what: str) -> str:
    """``kconfig`` (``CONFIG_*`` values for ``extern ... __kconfig``: a mapping of names
    to bool / int / str, or the text of a .config) as the text libbpf parses, every line
    checked: a name ``CONFIG_[A-Za-z0-9_]+``, a value ``y``/``n``/``m``, a number
    (decimal, 0x hex, 0 octal, 64 bits) or a double-quoted string on one line; a bool
    is ``y``/``n``. Else BPFTypeError/BPFValueError naming the entry: libbpf would read
    an unchecked value later, at load, with a vaguer error (or take a newline in a value
    as a second setting)."""
    if isinstance(kconfig, Mapping):
        lines = []
        for k, v in kconfig.items():
            if not isinstance(k, str):
                raise BPFTypeError(_errno.EINVAL, f"{what}: a name must be a str, got "
                                                  f"{_tname(k)} {k!r:.60}")
            if isinstance(v, bool):
                v = "y" if v else "n"
            elif isinstance(v, int):
                v = str(c_int(v, f"{what}: {k}", "s64" if v < 0 else "u64"))
            elif not isinstance(v, str):
                raise BPFTypeError(_errno.EINVAL, f"{what}: {k}: expected a bool, int or str, "
                                                  f"got {_tname(v)} {v!r:.60}")
            _kconfig_entry(k, v, what)
            lines.append(f"{k}={v}")
        return "\n".join(lines) + "\n"
    if not isinstance(kconfig, str):
        raise BPFTypeError(_errno.EINVAL, f"{what}: expected a str or a mapping, got "
                                          f"{_tname(kconfig)} {kconfig!r:.60}")
    for line in kconfig.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise BPFValueError(_errno.EINVAL, f"{what}: {line!r:.60} is not NAME=VALUE")
        _kconfig_entry(name, value, what)
    return kconfig if kconfig.endswith("\n") else kconfig + "\n"


def _kconfig_entry(name: str, value: str, what: str) -> None:
    if not _KCONFIG_NAME.match(name):
        raise BPFValueError(_errno.EINVAL, f"{what}: {name!r:.60} is not a CONFIG_* name "
                                           "(CONFIG_ then letters, digits, _)")
    if not _KCONFIG_VALUE.match(value):
        raise BPFValueError(_errno.EINVAL, f"{what}: {name}: {value!r:.60} is not y, n, m, a "
                                           "number or a double-quoted string on one line")
    if value[:1] not in ("y", "n", "m", '"'):
        n = int(value, 0) if not re.match(r"[+-]?0[0-7]+\Z", value) else int(value, 8)
        if not -(1 << 63) <= n < (1 << 64):
            raise BPFValueError(_errno.EINVAL, f"{what}: {name}: {value} does not fit 64 bits")
