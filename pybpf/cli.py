"""The ``pybpf`` command (also ``python -m pybpf``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

_TOOLS = {
    "execsnoop": "pybpf.tools.execsnoop",
    "gen": "pybpf.codegen",
    "opensnoop": "pybpf.tools.opensnoop",
    "tcpconnect": "pybpf.tools.tcpconnect",
    "biolatency": "pybpf.tools.biolatency",
    "profile": "pybpf.tools.profile",
    "audit": "pybpf.tools.audit",
    "firewall": "pybpf.tools.firewall",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _TOOLS:
        import importlib

        mod = importlib.import_module(_TOOLS[args[0]])
        return int(mod.main(args[1:]))
    ap = argparse.ArgumentParser(prog="pybpf", description="Load and inspect eBPF objects.",
                                 epilog="tools: " + ", ".join(sorted(_TOOLS)))
    ap.add_argument("command", choices=sorted(_TOOLS), help="what to run")
    ap.parse_args(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
