"""The ``pybpf`` command (also ``python -m pybpf``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import BPFError
from .tools._common import seconds

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
    "agent": "pybpf.agent",
}


_TOOL_HELP = {
    "execsnoop": "trace execs (pid, ppid, argv, return code)",
    "opensnoop": "trace opens (pid, comm, path, flags, fd or errno)",
    "tcpconnect": "trace TCP connects (IPv4/IPv6 addresses and ports)",
    "biolatency": "block I/O latency histograms",
    "profile": "sample stacks on every CPU, folded for flame graphs",
    "audit": "run a command, log its execs/opens/connects as JSON lines",
    "firewall": "XDP firewall: rules by source prefix and port, counters",
    "gen": "generate a typed Python skeleton for an object",
    "agent": "run probes from a TOML file as a service, exported (Prometheus, OTLP)",
}

_EXAMPLES = """examples:
  pybpf inspect probe.bpf.o                 programs, maps, globals, BTF (no root)
  pybpf run probe.bpf.o --set targ_pid=42 --duration 10
  pybpf run probe.bpf.o --prometheus 0.0.0.0:9435 --otlp http://collector:4318
  pybpf agent /etc/pybpf/agent.toml         several probes, exported, as a service
  pybpf features --json
  pybpf prog list;  pybpf map dump 17;  pybpf map dump /sys/fs/bpf/mymap
  pybpf build probe.bpf.c -o probe.bpf.o
  pybpf execsnoop --demo
  pybpf audit -- bash -c 'cat /etc/hostname'
"""


def _parser() -> argparse.ArgumentParser:
    from . import _clicmds as c

    ap = argparse.ArgumentParser(prog="pybpf", description="Load, run and inspect eBPF objects; "
                                 "prebuilt tracing and networking tools.", epilog=_EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Any, help: str, examples: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help,
                           epilog=f"examples:\n{examples}" if examples else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("inspect", c.cmd_inspect, "show an object's programs, maps, globals, BTF structs, "
            "license and CO-RE relocations (no root, nothing loaded)",
            "  pybpf inspect probe.bpf.o\n  pybpf inspect probe.bpf.o --json")
    p.add_argument("object", help="a .bpf.o file")
    p.add_argument("--all-structs", action="store_true", help="also kernel structs")
    json_flag(p)
    p = add("run", c.cmd_run, "load an object, set read-only globals, attach every program, "
            "print ring/perf buffer events decoded from BTF, dump maps at the end",
            "  pybpf run probe.bpf.o --duration 5\n"
            "  pybpf run probe.bpf.o --set targ_pid=1234 --set verbose=true --json\n"
            "  pybpf run probe.bpf.o --prometheus 127.0.0.1:9435 --otlp http://localhost:4318")
    p.add_argument("object", help="a .bpf.o file")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="set a const volatile global before load (int, true/false or text)")
    p.add_argument("--program", action="append", metavar="NAME",
                   help="load and attach only this program (a name or glob; repeatable)")
    p.add_argument("--no-program", action="append", metavar="NAME",
                   help="do not load this program (a name or glob; repeatable)")
    p.add_argument("--all-programs", action="store_true",
                   help="keep every alternative of one event (tp_btf and raw_tp twins...); "
                   "by default only the best one the kernel supports is loaded")
    p.add_argument("--max-entries", action="append", metavar="MAP=N",
                   help="size a map before load (maps the object leaves at 0)")
    p.add_argument("--value-size", action="append", metavar="MAP=N",
                   help="set a map's value size before load (stack maps...)")
    p.add_argument("--key-size", action="append", metavar="MAP=N",
                   help="set a map's key size before load (maps the object leaves at 0)")
    p.add_argument("--duration", type=seconds, help="stop after S seconds (default: Ctrl-C)")
    p.add_argument("--event-type", metavar="TYPE",
                   help="type of ring/perf buffer records: a type in the object's BTF, or a C "
                        "declaration ('struct event { __u32 pid; char comm[16]; }', compiled "
                        "by clang or found in the type cache; see pybpf build --type) "
                        "(default: the type named by PYBPF_EVENT_TYPE, else raw bytes)")
    json_flag(p)
    from .export.exporters import add_flags

    add_flags(p)
    p = add("features", c.cmd_features, "what the running kernel supports (probed): hooks, "
            "program types, map types, helpers",
            "  pybpf features\n  pybpf features --json\n  pybpf features --helpers xdp")
    p.add_argument("--helpers", metavar="PROG_TYPE",
                   help="list the helpers a program type may call (e.g. kprobe, xdp)")
    json_flag(p)
    p = add("prog", c.cmd_prog, "programs loaded in the kernel",
            "  pybpf prog list\n  pybpf prog show 42 --json")
    ps = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    json_flag(ps.add_parser("list", help="every loaded program"))
    q = ps.add_parser("show", help="one program by id")
    q.add_argument("id", type=int)
    json_flag(q)
    p = add("map", c.cmd_map, "maps in the kernel; dump decodes entries with the map's BTF",
            "  pybpf map list\n  pybpf map show 17\n  pybpf map dump /sys/fs/bpf/counts --json")
    ms = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    json_flag(ms.add_parser("list", help="every map"))
    for name, hlp in (("show", "one map"), ("dump", "a map's entries, typed by its BTF")):
        q = ms.add_parser(name, help=f"{hlp} (by id or pinned path)")
        q.add_argument("ref", metavar="ID|PATH")
        json_flag(q)
    p = add("link", c.cmd_link, "BPF links in the kernel", "  pybpf link list")
    ls = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    json_flag(ls.add_parser("list", help="every link"))
    p = add("build", c.cmd_build, "compile BPF C into a CO-RE object (clang, vmlinux.h); "
            "compile C type declarations into the type cache",
            "  pybpf build probe.bpf.c\n  pybpf build probe.bpf.c -o out.o -I include -D DEBUG\n"
            "  pybpf build --type 'struct event { __u32 pid; char comm[16]; }' "
            "--type-cache ./types")
    p.add_argument("source", nargs="?", help="SRC.bpf.c")
    p.add_argument("--type", action="append", metavar="DECL",
                   help="compile this C declaration's BTF into the type cache, so machines "
                        "without clang can use it (PYBPF_TYPE_CACHE=DIR); prints the file")
    p.add_argument("--type-cache", metavar="DIR",
                   help="where --type writes (default: ~/.cache/pybpf/types)")
    p.add_argument("-o", "--output", help="output object (default: SRC.bpf.o)")
    p.add_argument("-I", "--include", action="append", metavar="DIR", help="include dir")
    p.add_argument("-D", "--define", action="append", metavar="NAME[=VALUE]", help="define")
    p = add("upgrade", c.cmd_upgrade, "live-upgrade a pinned deployment to a new build of "
            "its object: maps reused or migrated by BTF, links switched without losing an "
            "event or packet (old pins in, new pins out)",
            "  pybpf upgrade fw-v2.bpf.o --from /sys/fs/bpf/fw\n"
            "  pybpf upgrade probe-v2.bpf.o --from /sys/fs/bpf/p1 --to /sys/fs/bpf/p2 "
            "--set targ_pid=42 --json")
    p.add_argument("object", help="the new build (.bpf.o)")
    p.add_argument("--from", dest="old_dir", required=True, metavar="DIR",
                   help="bpffs directory of the running deployment (maps pinned by name, "
                        "links under any name)")
    p.add_argument("--to", dest="new_dir", metavar="DIR",
                   help="where the new maps and links are pinned (default: --from); "
                        "pins of maps the new build dropped are removed and listed")
    p.add_argument("--name", help="object name (default: the file's stem); internal maps "
                                  "(.bss, .data) match by it")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="set a const volatile global of the new build")
    json_flag(p)
    for name in sorted(_TOOLS):  # dispatched to their own main() before parsing
        sub.add_parser(name, help=_TOOL_HELP.get(name, name), add_help=False)
    return ap


def _error(msg: str) -> None:
    print(f"pybpf: error: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in _TOOLS:
            import importlib

            mod = importlib.import_module(_TOOLS[args[0]])
            return int(mod.main(args[1:]))
        ap = _parser()
        ns = ap.parse_args(args)
        if not getattr(ns, "func", None):
            ap.print_help(sys.stderr)
            return 2
        return int(ns.func(ns))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except PermissionError as exc:
        msg = exc.strerror if type(exc) is PermissionError and exc.strerror else str(exc)
        if "CAP_" not in msg:
            msg += " (most BPF operations need root: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)"
        _error(msg)
        return 1
    except KeyError as exc:
        # (a pybpf error says it all; a bare KeyError's str() is the repr of its key)
        _error(str(exc) if isinstance(exc, BPFError) else
               str(exc.args[0]) if exc.args else repr(exc))
        return 1
    except OSError as exc:
        if type(exc) in (FileNotFoundError, IsADirectoryError, NotADirectoryError) and \
                exc.filename and exc.strerror:
            _error(f"{exc.filename}: {exc.strerror}")
        else:
            _error(str(exc))
        return 1
    except (ValueError, LookupError) as exc:
        _error(str(exc))
        return 1
    except ImportError as exc:  # an exporter's optional extra (pybpf.export): named in exc
        from .export import MissingExtraError

        if not isinstance(exc, MissingExtraError):
            raise
        _error(str(exc))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
