"""Histograms as BPF tools print them: log2 buckets (``biolatency``, ``runqlat``,
``funclatency``) and linear buckets (``runqlen``, ``bitesize``).

    hist = Log2Histogram(obj.maps["hists"][0].slots, unit="usecs")
    print(hist)                          # exactly libbpf-tools' print_log2_hist()
    print(LinearHistogram(counts, base=0, step=1, unit="runqlen"))

Both are plain data (``slots``, ``buckets()``, ``to_dict()``); ``format()`` is the
text of libbpf-tools' ``print_log2_hist`` / ``print_linear_hist``
(``trace_helpers.c``), character for character. No syscall: read the map, then
build one from the slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Log2Histogram", "LinearHistogram", "format_log2", "format_linear"]


def _stars(val: int, val_max: int, width: int) -> str:
    n = min(val, val_max) * width // val_max if val_max else 0
    return "*" * n + " " * (width - n) + ("+" if val > val_max else "")


def format_log2(slots: Sequence[int], unit: str = "usecs") -> str:
    """libbpf-tools' ``print_log2_hist(slots, len, unit)`` as text ("" when empty):
    slot 0 holds 0-1, slot i holds [2**i, 2**(i+1))."""
    idx_max = max((i for i, c in enumerate(slots) if c > 0), default=-1)
    if idx_max < 0:
        return ""
    val_max = max(slots)
    narrow = idx_max <= 32
    lines = [f"{'':{5 if narrow else 15}}{unit:<{19 if narrow else 29}} : count    "
             "distribution"]
    stars = 40 if narrow else 20
    width = 10 if narrow else 20
    for i in range(idx_max + 1):
        low, high = (1 << (i + 1)) >> 1, (1 << (i + 1)) - 1
        if low == high:
            low -= 1
        lines.append(f"{low:>{width}} -> {high:<{width}} : {slots[i]:<8} |"
                     f"{_stars(slots[i], val_max, stars)}|")
    return "\n".join(lines)


def format_linear(slots: Sequence[int], base: int = 0, step: int = 1,
                  unit: str = "value") -> str:
    """libbpf-tools' ``print_linear_hist(slots, len, base, step, unit)`` as text: one
    row per non-empty slot i, labelled ``base + i * step``."""
    used = [i for i, c in enumerate(slots) if c > 0]
    if not used:
        return ""
    val_max = max(slots)
    lines = [f"     {unit:<13} : count     distribution"]
    for i in range(used[0], used[-1] + 1):
        if slots[i]:
            lines.append(f"        {base + i * step:<10} : {slots[i]:<8} |"
                         f"{_stars(slots[i], val_max, 40)}|")
    return "\n".join(lines)


@dataclass
class Log2Histogram:
    """Counts in power-of-two buckets: slot 0 holds values 0-1, slot i holds [2**i, 2**(i+1))."""

    slots: list[int]
    unit: str = "usecs"
    label: str | None = field(default=None)

    @property
    def total(self) -> int:
        return sum(self.slots)

    def buckets(self) -> list[tuple[int, int, int]]:
        """(low, high, count) for every slot up to the last non-empty one."""
        last = max((i for i, c in enumerate(self.slots) if c), default=-1)
        out = []
        for i in range(last + 1):
            low, high = (1 << (i + 1)) >> 1, (1 << (i + 1)) - 1
            if low == high:
                low -= 1
            out.append((low, high, self.slots[i]))
        return out

    def format(self) -> str:
        """The histogram as libbpf-tools (and BCC) print it."""
        return format_log2(self.slots, self.unit)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "unit": self.unit, "total": self.total,
                "buckets": [{"low": lo, "high": hi, "count": c} for lo, hi, c in self.buckets()]}


@dataclass
class LinearHistogram:
    """Counts in equal buckets: slot i holds values from ``base + i * step``."""

    slots: list[int]
    base: int = 0
    step: int = 1
    unit: str = "value"
    label: str | None = field(default=None)

    @property
    def total(self) -> int:
        return sum(self.slots)

    def buckets(self) -> list[tuple[int, int]]:
        """(low, count) for every non-empty slot."""
        return [(self.base + i * self.step, c) for i, c in enumerate(self.slots) if c]

    def format(self) -> str:
        """The histogram as libbpf-tools print it."""
        return format_linear(self.slots, self.base, self.step, self.unit)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "unit": self.unit, "total": self.total,
                "buckets": [{"low": lo, "count": c} for lo, c in self.buckets()]}
