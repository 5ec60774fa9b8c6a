"""biolatency: block I/O latency (issue to completion) as log2 histograms, per disk if asked.

    with BioLatency(per_disk=True) as bl:
        time.sleep(5)
        for disk, hist in bl.histograms().items():
            print(disk); print(hist.format())

The kernel side fills a hash map of ``struct hist`` (27 log2 slots) keyed by
device; :meth:`BioLatency.histograms` reads it (one syscall per disk) into
:class:`Log2Histogram` objects, which print like BCC's histograms and are
plain data (``slots``, ``buckets()``, ``to_dict()``). CLI: ``pybpf biolatency
[--disks] [--device NAME] [--ms] [--interval S] [--count N] [--json]``.
"""

from __future__ import annotations

import argparse
import errno as _errno
import json
import os
import sys
import time

from ..errors import BPFError
from ..export.exporters import Exporters, add_flags
from ..histogram import Log2Histogram
from ._common import ProbeSession, decode, raw_items, raw_keys, seconds, term_as_interrupt

__all__ = ["Log2Histogram", "BioLatency", "disk_dev", "disk_name", "main"]

MINORBITS = 20


def disk_dev(name: str) -> int:
    """Kernel dev_t (``major << 20 | minor``) of a block device, e.g. ``disk_dev("vda")``."""
    base = os.path.basename(name)
    try:
        with open(f"/sys/class/block/{base}/dev") as f:
            major, minor = (int(x) for x in f.read().split(":"))
    except OSError:
        raise BPFError(_errno.ENODEV, f"no block device named {name!r} "
                                      f"(/sys/class/block/{base} is missing)") from None
    return (major << MINORBITS) | minor


def disk_name(dev: int) -> str:
    """Name of the block device with kernel dev_t ``dev`` ("253:4" if unknown)."""
    major, minor = dev >> MINORBITS, dev & ((1 << MINORBITS) - 1)
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return f"{major}:{minor}"


class BioLatency(ProbeSession):
    """Load and attach the biolatency probe; read :meth:`histograms` when you like.

    ``per_disk`` keys histograms by disk name (else one histogram, key None);
    ``device`` only counts that disk; ``milliseconds`` changes the unit.
    """

    probe = "biolatency"
    event_struct = ""

    def __init__(self, *, per_disk: bool = False, device: str | None = None,
                 milliseconds: bool = False) -> None:
        rodata: dict[str, int | bytes] = {"targ_per_disk": int(per_disk),
                                          "targ_ms": int(milliseconds)}
        if device is not None:
            rodata["targ_dev"] = disk_dev(device)
        self.per_disk = per_disk
        self.unit = "msecs" if milliseconds else "usecs"
        super().__init__(rodata=rodata)
        btf = self.obj.btf
        key_t, val_t = btf.find("hist_key"), btf.find("hist")
        if key_t is None or val_t is None:
            raise LookupError("biolatency.bpf.o lacks struct hist_key/struct hist in its BTF")
        self._key_id, self._val_id = key_t.id, val_t.id

    def histograms(self) -> dict[str | None, Log2Histogram]:
        """Current histograms: by disk name with ``per_disk``, else under the key None."""
        btf = self.obj.btf
        out: dict[str | None, Log2Histogram] = {}
        for k, v in raw_items(self.obj.maps["hists"]):
            dev = decode(btf, self._key_id, k)["dev"]
            slots = decode(btf, self._val_id, v)["slots"]
            label = disk_name(dev) if self.per_disk else None
            out[label] = Log2Histogram(list(slots), self.unit, label)
        return out

    def clear(self) -> None:
        """Empty the histograms (one syscall per disk)."""
        m = self.obj.maps["hists"]
        for k in raw_keys(m):
            m.delete(k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pybpf biolatency", description="Summarize block I/O latency as log2 histograms.",
        epilog="examples:\n  pybpf biolatency --interval 1 --count 5\n"
               "  pybpf biolatency --disks --ms --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--disks", action="store_true", help="one histogram per disk")
    ap.add_argument("--device", help="only this disk (e.g. vda, loop0)")
    ap.add_argument("--ms", action="store_true", help="milliseconds instead of microseconds")
    ap.add_argument("--interval", type=seconds, default=1.0, help="seconds between outputs")
    ap.add_argument("--count", type=int, default=0, help="number of outputs (0: until ^C)")
    ap.add_argument("--json", action="store_true", help="one JSON object per output")
    add_flags(ap)
    args = ap.parse_args(argv)
    exp = Exporters.from_args(args, "biolatency")
    try:
        bl = BioLatency(per_disk=args.disks, device=args.device, milliseconds=args.ms)
    except BPFError as exc:
        exp.close()
        if exc.errno == _errno.ENODEV:
            print(f"pybpf biolatency: {exc.strerror}", file=sys.stderr)
            return 2
        raise
    except BaseException:
        exp.close()
        raise
    with exp, bl, term_as_interrupt():
        # The histograms as Prometheus/OTel histograms (_sum from struct hist's sum),
        # by disk name with --disks; exported histograms are cumulative: not cleared.
        exp.watch(bl.obj, maps=["hists"], labels={"hists": (
            (lambda lb: {"disk": disk_name(int(lb["dev"]))}) if args.disks
            else (lambda lb: {}))})
        print("Tracing block device I/O... Hit Ctrl-C to end.", file=sys.stderr, flush=True)
        n = 0
        try:
            while not args.count or n < args.count:
                time.sleep(args.interval)
                n += 1
                hists = bl.histograms()
                if not exp.active:
                    bl.clear()
                if args.json:
                    print(json.dumps({"time": time.time(),
                                      "histograms": [h.to_dict() for h in hists.values()]}),
                          flush=True)
                    continue
                for label, h in sorted(hists.items(), key=lambda kv: kv[0] or ""):
                    print()
                    if label is not None:
                        print(f"disk = {label}")
                    print(h.format(), flush=True)
        except KeyboardInterrupt:
            pass
    return 0
