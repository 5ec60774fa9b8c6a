"""The built-in commands of the ``pybpf`` CLI: inspect, run, features, prog, map, link, build.

Each ``cmd_*`` takes the parsed arguments and returns the exit status; output
is aligned tables for terminals, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from ._maptypes import facts
from ._source import read_regular
from .btf import BTF, BTFKind
from .errors import BPFError
from .tools._common import decode, ringbuf_event_type, table, type_name

__all__ = ["cmd_inspect", "cmd_run", "cmd_features", "cmd_prog", "cmd_map", "cmd_link",
           "cmd_build", "cmd_upgrade", "jsonable"]


def jsonable(v: Any) -> Any:
    """Decoded values made JSON-friendly (bytes as hex)."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def _fmt(v: Any) -> str:
    return json.dumps(jsonable(v), separators=(",", ":"))


def _emit_json(data: Any) -> None:
    print(json.dumps(jsonable(data), indent=2))


# --- inspect ----------------------------------------------------------------------
def _core_relo_count(btf_ext: bytes) -> int:
    """CO-RE relocations recorded in a .BTF.ext section (0 if it has none)."""
    if len(btf_ext) < 32:
        return 0
    magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", btf_ext)
    if magic != 0xEB9F or hdr_len < 32:
        return 0
    core_off, core_len = struct.unpack_from("<II", btf_ext, 24)
    if not core_len:
        return 0
    pos = hdr_len + core_off
    end = pos + core_len
    if end > len(btf_ext):
        return 0
    (rec_size,) = struct.unpack_from("<I", btf_ext, pos)
    pos += 4
    total = 0
    while pos + 8 <= end:
        _sec, n = struct.unpack_from("<II", btf_ext, pos)
        pos += 8 + n * rec_size
        if pos > end:  # records past the end of the section: not counted
            break
        total += n
    return total


def _own_structs(btf: BTF) -> set[int]:
    """Ids of the structs the object itself uses in maps, globals and ring buffer events
    (not the kernel structs its programs read through pointers)."""
    seen: set[int] = set()
    found: set[int] = set()

    def walk(tid: int, through_ptr: bool) -> None:
        if tid in seen:
            return
        seen.add(tid)
        t = btf.types[tid]
        k = t.kind
        if k in (BTFKind.STRUCT, BTFKind.UNION):
            if t.name:
                found.add(tid)
            # Anonymous structs (map definitions) refer to key/value types by pointer.
            for m in t.members:
                walk(m.type, through_ptr=not t.name)
        elif k == BTFKind.PTR:
            if through_ptr:
                walk(t.type, False)
        elif k == BTFKind.ARRAY:
            walk(t.type, through_ptr)
        elif k in (BTFKind.TYPEDEF, BTFKind.CONST, BTFKind.VOLATILE, BTFKind.RESTRICT,
                   BTFKind.TYPE_TAG, BTFKind.VAR):
            walk(t.type, through_ptr)

    for t in btf:
        if t.kind == BTFKind.DATASEC:
            for v in t.members:  # (map definitions are anonymous structs: see above)
                walk(v.type, through_ptr=v.name.startswith("__pybpf_event__"))
    return found


def inspect_object(path: str) -> dict[str, Any]:
    """Everything ``pybpf inspect`` shows, as plain data. Parses the file only: no
    kernel, no privileges (pyelftools for the ELF, pybpf.btf for BTF)."""
    from elftools.elf.elffile import ELFFile

    from .object import Object

    # libbpf parses first: its checks give the clearest errors for a bad file.
    out: dict[str, Any] = {"path": path}
    with Object.open(path) as obj:
        out["programs"] = [{"name": p.name, "section": p.section, "type": p.type,
                            "instructions": p.instruction_count, "autoload": p.autoload}
                           for p in obj.programs.values()]
        out["maps"] = [{"name": m.name, "type": m.type, "key_size": m.key_size,
                        "value_size": m.value_size, "max_entries": m.max_entries,
                        "flags": m.flags, "internal": m.internal}
                       for m in obj.maps.values()]
        try:
            btf: BTF | None = obj.btf
        except BPFError:
            btf = None
    with io.BytesIO(read_regular(path, "BPF object file")) as f:
        elf = ELFFile(f)
        sections = {s.name: s for s in elf.iter_sections()}
        lic = sections.get("license")
        license_ = (lic.data().split(b"\0", 1)[0].decode(errors="replace")
                    if lic is not None else None)
        ext = sections.get(".BTF.ext")
        core = _core_relo_count(ext.data()) if ext is not None else 0
        sec_data = {name: s.data() for name, s in sections.items()
                    if name.startswith((".rodata", ".data", ".bss"))
                    and s["sh_type"] != "SHT_NOBITS"}
    out["license"] = license_
    out["core_relocations"] = core
    out["globals"] = []
    out["structs"] = []
    if btf is not None:
        for t in btf:
            if t.kind != BTFKind.DATASEC or t.name in (".maps", "license"):
                continue
            data = sec_data.get(t.name)
            for var in t.members:
                vt = btf.types[var.type]
                if vt.kind != BTFKind.VAR or var.name.startswith("__pybpf_event__"):
                    continue
                g: dict[str, Any] = {"name": var.name, "section": t.name,
                                     "type": type_name(btf, vt.type), "size": var.size}
                if data is not None and var.offset + var.size <= len(data):
                    g["value"] = decode(btf, vt.type, data[var.offset:var.offset + var.size])
                elif t.name.startswith(".bss"):
                    g["value"] = decode(btf, vt.type, bytes(var.size))
                out["globals"].append(g)
        own = _own_structs(btf)
        for t in btf:
            if t.kind in (BTFKind.STRUCT, BTFKind.UNION) and t.name:
                out["structs"].append({
                    "name": t.name, "kind": t.kind.name.lower(), "size": t.size,
                    "own": t.id in own,
                    "members": [{"name": m.name, "type": type_name(btf, m.type),
                                 "offset": m.offset // 8} for m in t.members]})
    return out


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_object(args.object)
    if args.json:
        _emit_json(info)
        return 0
    print(f"{info['path']}: license {info['license']!r}, "
          f"{info['core_relocations']} CO-RE relocations")
    print("\nPROGRAMS")
    print(table([["NAME", "TYPE", "SECTION", "INSNS"]]
                + [[p["name"], p["type"], p["section"], str(p["instructions"])]
                   for p in info["programs"]], right={3}))
    print("\nMAPS")
    print(table([["NAME", "TYPE", "KEY", "VALUE", "MAX_ENTRIES", "FLAGS"]]
                + [[m["name"], m["type"], str(m["key_size"]), str(m["value_size"]),
                    str(m["max_entries"]), hex(m["flags"])] for m in info["maps"]],
                right={2, 3, 4}))
    if info["globals"]:
        print("\nGLOBALS")
        print(table([["NAME", "SECTION", "TYPE", "VALUE"]]
                    + [[g["name"], g["section"], g["type"], _fmt(g.get("value", ""))]
                       for g in info["globals"]]))
    if info["structs"]:
        print("\nSTRUCTS" + ("" if args.all_structs else " (of maps, globals and events; "
                                                        "--all-structs for all)"))
        shown = [s for s in info["structs"] if args.all_structs or s["own"]]
        for s in shown:
            members = ", ".join(f"{m['type']} {m['name']}" for m in s["members"])
            print(f"  {s['kind']} {s['name']} ({s['size']} bytes): {members}")
    return 0


# --- run --------------------------------------------------------------------------
def _rodata_has(obj: Any, name: str) -> bool:
    try:
        return name in obj.rodata
    except BPFError:  # no .rodata section
        return False


def _parse_value(text: str) -> int | bytes:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return 1
    if low in ("false", "no", "off"):
        return 0
    try:
        return int(text, 0)
    except ValueError:
        return text.encode()


def _dump_map(m: Any, btf: BTF | None) -> list[tuple[Any, Any]]:
    out = []
    from .maps import possible_cpus

    kid, vid = (m.btf_key_type_id, m.btf_value_type_id) if btf is not None else (0, 0)
    for k, v in m.items_raw():  # the one walk: keys present throughout come once
        if m.type == "array" and not kid and vid and len(k) == 4:
            key: Any = int.from_bytes(k, "little")  # internal maps (.bss...) have no key type
        else:
            key = decode(btf, kid, k) if btf is not None and kid else k
        if m.percpu:
            step = (m.value_size + 7) // 8 * 8
            vals = [v[i * step:i * step + m.value_size] for i in range(possible_cpus())]
            val: Any = [decode(btf, vid, x) if btf is not None and vid else x for x in vals]
        else:
            val = decode(btf, vid, v) if btf is not None and vid else v
        out.append((key, val))
    return out




def _configure_run(obj: Any, args: argparse.Namespace) -> None:
    """``pybpf run``'s choices before load: programs (``--program``/``--no-program``,
    one of each group of alternatives unless ``--all-programs``) and map sizes."""
    if args.program or args.no_program:
        obj.select_programs(args.program, exclude=args.no_program or ())
    if not args.all_programs and not args.program:
        for off, kept in obj.choose_alternatives().items():
            print(f"pybpf run: {obj.name}: program {off!r} not loaded: it counts the same "
                  f"events as {kept!r} (--all-programs keeps both)", file=sys.stderr)
    for attr in ("max_entries", "key_size", "value_size"):
        flag = "--" + attr.replace("_", "-")
        for item in getattr(args, attr) or []:
            name, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise ValueError(f"{flag} takes MAP=N (N a decimal count), got {item!r}")
            if name not in obj.maps:
                raise KeyError(f"{obj.name}: no map named {name!r} (maps: "
                               f"{', '.join(obj.maps)})")
            setattr(obj.maps[name], attr, int(value))


def cmd_run(args: argparse.Namespace) -> int:
    from .export.events import event_attributes
    from .export.exporters import Exporters
    from .object import Object
    from .perfbuf import PerfBuffer
    from .ringbuf import RingBuffer

    obj = Object.open(args.object)
    with obj, Exporters.from_args(args, obj.name) as exp:
        for item in args.set or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
            parsed = _parse_value(value)
            if isinstance(parsed, bytes) and _rodata_has(obj, name):
                # text: typed by the variable (a char array takes it; an int refuses it)
                obj.rodata[name] = value
            else:
                obj.set_rodata(name, parsed)
        _configure_run(obj, args)
        try:
            btf: BTF | None = obj.btf
        except BPFError:  # an object without BTF: records and maps as raw bytes
            btf = None
        given = None
        if args.event_type:  # a type in the object's BTF, or a C declaration (clang/cache)
            from .typespec import btf_type
            try:
                given = btf_type(args.event_type, btf=btf, what="--event-type")
            except LookupError as e:
                raise ValueError(f"{e} ({args.object})") from None
        obj.load()
        consumers: list[Any] = []

        def printer(map_name: str, ev_type: Any) -> Callable[[bytes], None]:
            def show(data: bytes) -> None:
                ev = decode(ev_type.btf, ev_type.id, data) if ev_type is not None else data
                attrs = None
                if exp.logs is not None and ev_type is not None:  # OTLP: enums by name
                    attrs = event_attributes(decode(ev_type.btf, ev_type.id, data,
                                                    enum_names=True))
                wall = exp.event(map_name, ev if isinstance(ev, dict) else {"data": ev},
                                 attributes=attrs)
                if args.json:
                    print(json.dumps({"map": map_name, "event": jsonable(ev),
                                      **exp.stamp(wall)}), flush=True)
                else:
                    print(f"{map_name}: {_fmt(ev)}", flush=True)
            return show

        for m in obj.maps.values():
            ev_type = (ringbuf_event_type(btf, m.name) if btf else None) or given
            if m.type == "ringbuf":
                consumers.append(RingBuffer(m, callback=printer(m.name, ev_type)))
            elif m.type == "perf_event_array":
                consumers.append(PerfBuffer(m, callback=printer(m.name, ev_type)))
        exp.watch(obj)  # maps become metrics, read at scrape/export time
        # Attach once the consumers exist: a perf event array slot without a reader
        # drops the kernel's samples uncounted.
        attached = []
        for p in obj.programs.values():
            if not p.autoload:
                continue
            try:
                if p.type == "perf_event":
                    p.attach_perf_event()
                else:
                    p.attach_auto()
                attached.append(p.name)
            except BPFError as exc:
                print(f"pybpf run: program {p.name!r} ({p.section}) not attached: "
                      f"{exc.strerror}", file=sys.stderr)
        print(f"pybpf run: {obj.name}: attached {len(attached)} of {len(obj.programs)} "
              f"programs ({', '.join(attached) or 'none'}); Ctrl-C to stop", file=sys.stderr,
              flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        stop = False

        def on_term(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        old = signal.signal(signal.SIGTERM, on_term)
        try:
            while not stop and (deadline is None or time.monotonic() < deadline):
                if consumers:
                    for c in consumers:
                        c.poll(0.1 / len(consumers))
                else:
                    time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, old)
            for c in consumers:
                c.consume()  # what is left, even below a wake-up threshold
                c.close()
        dumps: dict[str, Any] = {}
        for m in obj.maps.values():
            if not facts(m.type).dump or (m.internal and ".rodata" in m.name):
                continue
            if m.name == "pybpf_ringbuf_drops":
                continue
            dumps[m.name] = _dump_map(m, btf)
        if args.json:
            print(json.dumps({"maps": {k: [{"key": jsonable(a), "value": jsonable(b)}
                                            for a, b in v] for k, v in dumps.items()}}))
        else:
            for name, entries in dumps.items():
                _print_entries(name, obj.maps[name].type, entries)
    return 0


def _is_zero(v: Any) -> bool:
    if isinstance(v, dict):
        return all(_is_zero(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(_is_zero(x) for x in v)
    if isinstance(v, (bytes, bytearray)):
        return not any(v)
    return not v


_TEXT_LIMIT = 100


def _print_entries(name: str, map_type: str, entries: list[tuple[Any, Any]]) -> None:
    """A map's entries for a terminal: arrays without their all-zero slots, at most
    _TEXT_LIMIT lines (``--json`` has everything)."""
    shown = entries
    note = ""
    if facts(map_type).length == "slots":  # arrays: every slot is present
        shown = [(k, v) for k, v in entries if not _is_zero(v)]
        if len(shown) < len(entries):
            note = f", {len(entries) - len(shown)} all-zero not shown"
    print(f"\nmap {name}: {len(entries)} entries{note}")
    for k, v in shown[:_TEXT_LIMIT]:
        print(f"  {_fmt(k)}: {_fmt(v)}")
    if len(shown) > _TEXT_LIMIT:
        print(f"  ... {len(shown) - _TEXT_LIMIT} more (--json shows every entry)")


# --- features ------------------------------------------------------------------------
def cmd_features(args: argparse.Namespace) -> int:
    from . import features

    if args.helpers:
        return _helpers(args)
    s = features.summary()
    if not any(s["program_types"].values()):
        print("pybpf features: no program type could be loaded: this process lacks "
              "CAP_BPF (run as root); the results say what it may do", file=sys.stderr)
    if args.json:
        _emit_json(s)
        return 0
    print(f"kernel {s['kernel']}, libbpf {s['libbpf']}\n")
    print("HOOKS")
    print(table([["HOOK", "SUPPORTED", "WHY"]]
                + [[k, "yes" if v["supported"] else "no", v["reason"]]
                   for k, v in s["hooks"].items()]))
    api = s["libbpf_api"]
    print(f"\nLIBBPF {api['libbpf']} (pybpf needs {api['minimum']}+): APIs newer than "
          f"{api['minimum']}, used when the runtime has them")
    print(table([["CAPABILITY", "SYMBOL", "SINCE", "HERE", "PATH"]]
                + [[k, v["symbol"], v["since"], "yes" if v["present"] else "no", v["path"]]
                   for k, v in api["capabilities"].items()]))
    for title, key in (("PROGRAM TYPES", "program_types"), ("MAP TYPES", "map_types")):
        print(f"\n{title}")
        items = sorted(s[key].items())
        yes = [k for k, v in items if v]
        no = [k for k, v in items if not v]
        print(f"  supported ({len(yes)}): {' '.join(yes)}")
        print(f"  not supported ({len(no)}): {' '.join(no) or '-'}")
    return 0


def _helper_names() -> dict[int, str]:
    """Helper id -> name, from the kernel's ``enum bpf_func_id`` (its BTF)."""
    vm = BTF.vmlinux()
    t = vm.find("bpf_func_id", BTFKind.ENUM)
    if t is None:
        return {}
    return {m.value: m.name[len("BPF_FUNC_"):] for m in t.members
            if m.name.startswith("BPF_FUNC_")}


def _helpers(args: argparse.Namespace) -> int:
    from . import features

    supported = features.helpers(args.helpers)
    names = _helper_names()
    rows = [(i, names.get(i, f"helper_{i}"), ok) for i, ok in sorted(supported.items())]
    if args.json:
        _emit_json({"program_type": args.helpers,
                    "helpers": [{"id": i, "name": n, "supported": ok} for i, n, ok in rows]})
        return 0
    yes = [n for _, n, ok in rows if ok]
    no = [n for _, n, ok in rows if not ok]
    print(f"helpers callable from {args.helpers} programs ({len(yes)}): {' '.join(yes)}")
    print(f"\nnot callable ({len(no)}): {' '.join(no) or '-'}")
    return 0


# --- prog / map / link ------------------------------------------------------------------
def _prog_row(p: Any) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "type": p.type, "tag": p.tag,
            "xlated_size": p.xlated_size, "jited_size": p.jited_size,
            "verified_insns": p.verified_insns, "map_ids": list(p.map_ids),
            "btf_id": p.btf_id, "run_count": p.run_count, "run_time_ns": p.run_time_ns}


def cmd_prog(args: argparse.Namespace) -> int:
    from .program import list_programs

    progs = list_programs()
    if args.action == "show":
        match = [p for p in progs if p.id == args.id]
        if not match:
            print(f"pybpf prog show: no program with id {args.id}", file=sys.stderr)
            return 1
        row = _prog_row(match[0])
        if args.json:
            _emit_json(row)
        else:
            print(table([[k, _fmt(v)] for k, v in row.items()]))
        return 0
    rows = [_prog_row(p) for p in progs]
    if args.json:
        _emit_json(rows)
        return 0
    print(table([["ID", "TYPE", "NAME", "TAG", "XLATED", "JITED", "MAPS"]]
                + [[str(r["id"]), r["type"], r["name"], r["tag"], str(r["xlated_size"]),
                    str(r["jited_size"]), ",".join(map(str, r["map_ids"]))] for r in rows],
                right={0, 4, 5}))
    return 0


def _open_map(ref: str) -> Any:
    from .maps import Map

    if ref.isdigit():
        return Map.from_id(int(ref))
    return Map.open_pinned(ref)


def _map_row(info: Any) -> dict[str, Any]:
    return {"id": info.id, "name": info.name, "type": info.type, "key_size": info.key_size,
            "value_size": info.value_size, "max_entries": info.max_entries,
            "flags": info.flags, "btf_id": info.btf_id}


def cmd_map(args: argparse.Namespace) -> int:
    from .maps import list_maps

    if args.action == "list":
        rows = [_map_row(i) for i in list_maps()]
        if args.json:
            _emit_json(rows)
            return 0
        print(table([["ID", "TYPE", "NAME", "KEY", "VALUE", "MAX_ENTRIES", "FLAGS", "BTF"]]
                    + [[str(r["id"]), r["type"], r["name"], str(r["key_size"]),
                        str(r["value_size"]), str(r["max_entries"]), hex(r["flags"]),
                        str(r["btf_id"] or "-")] for r in rows], right={0, 3, 4, 5}))
        return 0
    m = _open_map(args.ref)
    try:
        info = m.info()
        if args.action == "show":
            row = _map_row(info)
            if args.json:
                _emit_json(row)
            else:
                print(table([[k, _fmt(v)] for k, v in row.items()]))
            return 0
        btf = None
        if info.btf_id and (info.btf_key_type_id or info.btf_value_type_id):
            from .mapkinds import kernel_btf_by_id

            btf = kernel_btf_by_id(info.btf_id)
        if not facts(info.type).dump:
            print(f"pybpf map dump: map {info.id} ({info.type}) has no entries to dump",
                  file=sys.stderr)
            return 1
        entries = _dump_map(m, btf)
        if args.json:
            _emit_json([{"key": k, "value": v} for k, v in entries])
        else:
            for k, v in entries:
                print(f"{_fmt(k)}: {_fmt(v)}")
            print(f"({len(entries)} entries{'' if btf else ', no BTF: raw bytes'})",
                  file=sys.stderr)
        return 0
    finally:
        m.close()


def cmd_link(args: argparse.Namespace) -> int:
    from .link import list_links

    links = list_links()
    if args.json:
        _emit_json([{"id": i.id, "type": i.type, "prog_id": i.prog_id} for i in links])
        return 0
    print(table([["ID", "TYPE", "PROG"]]
                + [[str(i.id), i.type, str(i.prog_id)] for i in links], right={0, 2}))
    return 0


# --- build --------------------------------------------------------------------------
def cmd_upgrade(args: argparse.Namespace) -> int:
    from .object import Object
    from .upgrade import upgrade_pinned

    obj = Object.open(args.object, name=args.name)
    with obj:  # closing leaves what is pinned
        for item in args.set or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
            obj.set_rodata(name, _parse_value(value))
        report = upgrade_pinned(obj, args.old_dir, args.new_dir)
    if args.json:
        _emit_json({"seconds": report.seconds,
                    "both_attached_seconds": report.both_attached_seconds,
                    "generation": report.generation,
                    "maps": [vars(m) for m in report.maps.values()],
                    "links": [vars(ln) for ln in report.links],
                    "warnings": report.warnings,
                    "removed_pins": report.removed_pins})
    else:
        print(report)
        for w in report.warnings:
            print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from . import toolchain

    if args.type:  # C declarations -> the type cache (pybpf.typespec)
        from .typespec import compile_c
        for path in compile_c(args.type, args.type_cache):
            print(path)
        if args.source is None:
            return 0
    if args.source is None:
        print("pybpf build: give SRC.bpf.c, or --type DECL", file=sys.stderr)
        return 2
    defines = {}
    for d in args.define or []:
        k, _, v = d.partition("=")
        defines[k] = v or "1"
    try:
        out = toolchain.compile(args.source, args.output, include_dirs=args.include or [],
                                defines=defines)
    except toolchain.CompileError as exc:
        # One line: the first diagnostic and how many more there are.
        errors = [ln for ln in exc.output.splitlines() if "error:" in ln]
        first = (errors or exc.output.strip().splitlines() or ["clang failed"])[0].strip()
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        print(f"pybpf build: {args.source} does not compile: {first}{more}", file=sys.stderr)
        return 1
    print(out)
    return 0

