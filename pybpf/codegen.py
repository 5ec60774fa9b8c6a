"""``pybpf gen OBJ``: a typed Python module (and ``.pyi`` stub) for one BPF object.

    pybpf gen probe.bpf.o -o probe_skel.py     # writes probe_skel.py and probe_skel.pyi
    pybpf gen probe.bpf.o > probe_skel.py      # module only, on stdout

The module defines the object's structs and enums (the same classes pybpf
builds from BTF at run time) and a skeleton class named after the object::

    from probe_skel import Probe, event
    with Probe() as skel:                 # opens the object (path recorded, or embedded)
        skel.rodata.target_pid = 42       # typed: mypy knows the globals,
        skel.load()
        v = skel.maps.counts[1]           # ... the maps' key and value types,
        skel.progs.handle_exec.attach()   # ... and the programs.

The ``.pyi`` stub carries the types, so mypy and IDEs check field names and value
types in user code; at run time everything comes from the object's BTF.
"""

from __future__ import annotations

import argparse
import base64
import keyword
import os
import re
import sys

from ._maptypes import TABLE
from .btf import BTF, BTFKind
from .types import ArrayCodec, Codec, EnumCodec, StructCodec, codec_for

__all__ = ["generate", "main"]

# The class each map type's attribute is annotated with, from the one table of map-type
# facts; kinds the stub does not import (local storage, raw maps) are TypedMap there.
_MAP_CLASSES = {name: f.kind for name, f in TABLE.items()
                if f.kind not in ("Map", "LocalStorageMap")}
_KEYLESS = {name for name, f in TABLE.items() if f.keyless}


def _ident(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out + "_" if keyword.iskeyword(out) else out


def _class_name(obj_name: str) -> str:
    return "".join(p.capitalize() for p in _ident(obj_name).split("_") if p) or "Skeleton"


# Names the generated files use themselves: a C type with one of these names is renamed
# with a trailing underscore.
_RESERVED = frozenset({
    "int", "bool", "float", "bytes", "str", "list", "dict", "tuple", "object", "type", "Any",
    "TypeAlias", "CStr", "Struct", "Union", "enum", "ipaddress", "os", "pybpf", "base64",
    "OBJECT_PATH", "OBJECT_BYTES", "_BTF", "_btf", "_Attrs", "_Maps", "_Progs",
    *_MAP_CLASSES.values(), "TypedMap"})


def _pyname(c: Codec) -> str:
    n = _ident(c.name)
    return n + "_" if n in _RESERVED or n.startswith("_Sec") else n


def _ann(c: Codec) -> str:
    """Annotation for a decoded value. Struct and enum types go through module-level
    aliases (``_T_name``) so a field named like its type does not shadow it."""
    if isinstance(c, StructCodec):
        return f"_T_{_pyname(c)}"
    if isinstance(c, EnumCodec) and c.enum is not None:
        return f"_T_{_pyname(c)} | int"
    if isinstance(c, ArrayCodec):
        return f"list[{_ann(c.elem)}]"
    return c.pytype


def _set_ann(c: Codec) -> str:
    """What an assignment accepts."""
    if isinstance(c, StructCodec):
        return f"_T_{_pyname(c)} | dict[str, Any] | tuple[Any, ...]"
    if c.pytype == "CStr":
        return "bytes | str"
    if c.pytype == "bytes":
        return "bytes | bytearray | list[int]"
    if isinstance(c, ArrayCodec):
        return "list[Any] | tuple[Any, ...]"
    if isinstance(c, EnumCodec) and c.enum is not None:
        return f"_T_{_pyname(c)} | int | str"
    if c.pytype == "float":
        return "float"
    return c.pytype


def _field_stub(name: str, c: Codec) -> list[str]:
    get, put = _ann(c), _set_ann(c)
    if get == put:
        return [f"    {name}: {get}"]
    return ["    @property",
            f"    def {name}(self) -> {get}: ...",
            f"    @{name}.setter",
            f"    def {name}(self, value: {put}) -> None: ..."]


def _collect(btf: BTF) -> tuple[list[StructCodec], list[EnumCodec]]:
    structs: dict[str, StructCodec] = {}
    enums: dict[str, EnumCodec] = {}

    def visit(c: Codec) -> None:
        if isinstance(c, StructCodec):
            if c.name in structs:
                return
            structs[c.name] = c
            for m in c.members:
                visit(m.codec)
        elif isinstance(c, EnumCodec) and c.enum is not None:
            enums.setdefault(c.name, c)
        elif hasattr(c, "elem"):
            visit(c.elem)

    for t in btf:
        if t.kind in (BTFKind.STRUCT, BTFKind.UNION, BTFKind.ENUM, BTFKind.ENUM64) and t.name:
            try:
                visit(codec_for(btf, t.id))
            except Exception:  # noqa: BLE001 - a type pybpf cannot represent: skip it
                continue
    return list(structs.values()), list(enums.values())


_EVENT_MAPS = {name for name, f in TABLE.items() if f.stream}


def _collect_from(btf: BTF, type_id: int, structs: list[StructCodec], enums: list[EnumCodec],
                  origin: dict[int, BTF]) -> None:
    """Add the structs and enums reached from type ``type_id`` of ``btf`` (a declaration's
    own BTF) to ``structs``/``enums``, noting in ``origin`` (by id of the codec) where
    each came from."""
    have = {c.name for c in structs} | {c.name for c in enums}

    def visit(c: Codec) -> None:
        if isinstance(c, StructCodec):
            if c.name in have:
                return
            have.add(c.name)
            structs.append(c)
            origin[id(c)] = btf
            for m in c.members:
                visit(m.codec)
        elif isinstance(c, EnumCodec) and c.enum is not None and c.name not in have:
            have.add(c.name)
            enums.append(c)
            origin[id(c)] = btf
        elif hasattr(c, "elem"):
            visit(c.elem)

    visit(codec_for(btf, type_id))


def generate(path: str, *, embed: bool = False, module_path: str | None = None,
             map_types: dict[str, tuple[str | None, str | None]] | None = None
             ) -> tuple[str, str]:
    """(module source, stub source) for the BPF object at ``path``. ``map_types`` gives
    maps key and value types the object's BTF lacks: {map: (key, value)}, each a C
    declaration (:func:`pybpf.typespec.btf_type`) or None; the skeleton sets them on
    the maps before load (ring and perf buffers: their record type, in ``EVENT_TYPES``
    for ``decode=``), and the module defines their classes."""
    from .object import Object
    from .typespec import btf_type

    map_types = dict(map_types or {})
    with Object.open(path) as obj:
        btf = obj.btf
        structs, enums = _collect(btf)
        foreign: dict[int, tuple[str, BTF]] = {}  # id(BTF) -> (declaration, its BTF)
        origin: dict[int, BTF] = {}
        given: dict[str, tuple[Codec | None, Codec | None]] = {}
        for mname, specs in map_types.items():
            if mname not in obj.maps:
                raise ValueError(f"--map-type: no map {mname!r} in {path} (maps: "
                                 f"{', '.join(obj.maps)})")
            pair: list[Codec | None] = []
            for spec in specs:
                if spec is None:
                    pair.append(None)
                    continue
                t = btf_type(spec, btf=btf, what=f"map {mname!r} type")
                assert t.btf is not None
                if t.btf is not btf:
                    foreign[id(t.btf)] = (spec, t.btf)
                _collect_from(t.btf, t.id, structs, enums, origin)
                pair.append(codec_for(t.btf, t.id))
            given[mname] = (pair[0], pair[1])
        cls = _class_name(obj.name)
        maps = []
        for name, m in obj.maps.items():
            if m.internal:
                continue
            kind = _MAP_CLASSES.get(m.type, "TypedMap")
            kc = vc = None
            try:
                if m.btf_key_type_id:
                    kc = codec_for(btf, m.btf_key_type_id)
                if m.btf_value_type_id:
                    vc = codec_for(btf, m.btf_value_type_id)
            except Exception:  # noqa: BLE001
                kc = vc = None
            gk, gv = given.get(name, (None, None))
            if m.type not in _EVENT_MAPS:
                kc, vc = gk or kc, gv or vc
            maps.append((name, m.type, kind, kc, vc))
        progs = list(obj.programs)
        sections = {}
        for sname, sec in obj.sections.items():
            sections[sname] = {v: sec.codec_of(v) for v in sec}
        obj_name = obj.name

    src_ref = os.path.abspath(path)
    lines = [f'"""Typed skeleton for {os.path.basename(path)} (generated by `pybpf gen`; do not '
             'edit)."""', "", "from __future__ import annotations", "", "import os",
             "from typing import Any", "", "import pybpf", "from pybpf.types import CStr", ""]
    if embed:
        with open(path, "rb") as f:
            blob = base64.b64encode(f.read()).decode()
        lines += ["import base64", "", "OBJECT_PATH: str | None = None",
                  "OBJECT_BYTES: bytes | None = base64.b64decode(", *(
                      f"    {blob[i:i + 96]!r}" for i in range(0, len(blob), 96)), ")", ""]
    else:
        lines += [f"OBJECT_PATH: str | None = {src_ref!r}", "OBJECT_BYTES: bytes | None = None",
                  ""]
    lines += [
        "", "def _btf() -> pybpf.BTF:",
        "    with pybpf.Object.open(OBJECT_BYTES if OBJECT_BYTES is not None else "
        "OBJECT_PATH, name=" + repr(obj_name) + ") as o:  # type: ignore[arg-type]",
        "        return o.btf", "", "", "_BTF = _btf()", ""]
    # types given with --map-type: each declaration's own BTF (clang, or the type cache)
    btf_var = {id(btf): "_BTF"}
    for i, (decl, fbtf) in enumerate(foreign.values()):
        btf_var[id(fbtf)] = f"_BTF{i + 1}"
        lines.append(f"_BTF{i + 1} = pybpf.btf_type({decl!r}).btf")
    owner = {c: btf_var[id(b)] for c, b in origin.items()}
    for e in enums:
        lines.append(f"{_pyname(e)} = {owner.get(id(e), '_BTF')}[{e.type_id}].pytype")
    for s in structs:
        lines.append(f"{_pyname(s)} = {owner.get(id(s), '_BTF')}[{s.type_id}].pytype")
    set_lines = []
    events = {}
    for mname, specs in map_types.items():
        mtype = next(mt for n, mt, *_ in maps if n == mname)
        if mtype in _EVENT_MAPS:
            events[mname] = specs[1]
        else:
            set_lines.append(f"        self.obj.maps[{mname!r}].set_types({specs[0]!r}, "
                             f"{specs[1]!r})")
    lines += ["", f"EVENT_TYPES: dict[str, Any] = {events!r}",
              "\"\"\"Record types of ring/perf buffers given to `pybpf gen --map-type` "
              "(for decode=).\"\"\""]
    lines += ["", "", "class _Attrs:", "    def __init__(self, get: Any) -> None:",
              "        self._get = get", "",
              "    def __getattr__(self, name: str) -> Any:",
              "        return self._get(name)", "", "",
              f"class {cls}:",
              f'    """The {obj_name} object: open on creation; load(), attach(), close()."""',
              "",
              "    def __init__(self, path: str | os.PathLike[str] | bytes | None = None, "
              "**options: Any) -> None:",
              "        src = path if path is not None else (OBJECT_BYTES if OBJECT_BYTES is not "
              "None else OBJECT_PATH)",
              f"        options.setdefault('name', {obj_name!r})",
              "        self.obj = pybpf.Object.open(src, **options)  # type: ignore[arg-type]",
              *set_lines,
              "        self.maps = _Attrs(lambda n: self.obj.maps[n])",
              "        self.progs = _Attrs(lambda n: self.obj.programs[n])", "",
              "    def load(self) -> " + repr(cls) + ":",
              "        self.obj.load()", "        return self", "",
              "    def attach(self) -> list[pybpf.Link]:", "        return self.obj.attach()",
              "", "    def close(self) -> None:", "        self.obj.close()", "",
              "    def __enter__(self) -> " + repr(cls) + ":", "        return self", "",
              "    def __exit__(self, *exc: object) -> None:", "        self.close()", ""]
    for sec_attr in ("rodata", "bss", "data"):
        if f".{sec_attr}" in sections:
            lines += ["    @property", f"    def {sec_attr}(self) -> Any:",
                      f"        return self.obj.{sec_attr}", ""]
    module = "\n".join(lines).rstrip() + "\n"

    # --- stub -------------------------------------------------------------------
    st = [f'"""Types for {os.path.basename(path)} (generated by `pybpf gen`)."""', "",
          "import enum", "import ipaddress", "import os", "from typing import Any, TypeAlias",
          "",
          "import pybpf", "from pybpf.mapkinds import (", "    ArrayMap, ArrayOfMapsMap, "
          "BloomFilterMap, CPUMap, DevMap, HashMap, LPMTrieMap, PerCPUArrayMap,",
          "    PerCPUHashMap, ProgArrayMap, QueueMap, SockMap, StackTraceMap, TypedMap, "
          "XSKMap,", ")", "from pybpf.types import CStr, Struct, Union", "",
          "OBJECT_PATH: str | None", "OBJECT_BYTES: bytes | None",
          "EVENT_TYPES: dict[str, Any]", ""]
    for e in enums:
        st.append(f"class {_pyname(e)}(enum.IntEnum):")
        members = list(e.enum.__members__.items()) if e.enum is not None else []
        for n, v in members:
            st.append(f"    {_ident(n)} = {int(v)}")
        if not members:
            st.append("    ...")
        st.append("")
    for s in structs:
        base = "Union" if s.is_union else "Struct"
        st.append(f"class {_pyname(s)}({base}):")
        for mem in s.members:
            st.extend(_field_stub(mem.name, mem.codec))
        params = ", ".join(f"{mem.name}: {_set_ann(mem.codec)} = ..." for mem in s.members)
        st.append(f"    def __init__(self{', ' if params else ''}{params}) -> None: ...")
        st.append("")
    st += [f"_T_{_pyname(c)}: TypeAlias = {_pyname(c)}" for c in (*enums, *structs)]
    st += ["", "class _Maps:"]
    for name, mtype, kind, kc, vc in maps:
        if mtype in _KEYLESS:
            ann = f"{kind}[{_ann(vc) if vc else 'bytes'}]"
        elif kind in ("ProgArrayMap", "XSKMap", "StackTraceMap"):
            ann = kind
        elif kind == "ArrayOfMapsMap":
            ann = f"{kind}[{_ann(kc) if kc else 'bytes'}]"
        elif kind == "SockMap":
            ann = f"{kind}[{_ann(kc) if kc else 'bytes'}]"
        elif kind == "LPMTrieMap":
            ann = f"{kind}[{_ann(vc) if vc else 'bytes'}]"
        else:
            k = _ann(kc) if kc else "bytes"
            v = _ann(vc) if vc else "bytes"
            if kind.startswith("PerCPU"):
                v = f"list[{v}]"
            ann = f"{kind}[{k}, {v}]"
        st.append(f"    {_ident(name)}: {ann}")
    if not maps:
        st.append("    ...")
    st += ["", "class _Progs:"]
    st += [f"    {_ident(p)}: pybpf.Program" for p in progs] or ["    ..."]
    st.append("")
    sec_classes = {}
    for sname, variables in sections.items():
        cname = "_Sec" + _class_name(sname.strip(".").replace(".", "_"))
        sec_classes[sname] = cname
        st.append(f"class {cname}:")
        for v, c in variables.items():
            st.extend(_field_stub(_ident(v), c))
        if not variables:
            st.append("    ...")
        st.append("")
    st += [f"class {cls}:", "    obj: pybpf.Object", "    maps: _Maps", "    progs: _Progs",
           "    def __init__(self, path: str | os.PathLike[str] | bytes | None = None, "
           "**options: Any) -> None: ...",
           f"    def load(self) -> {cls}: ...", "    def attach(self) -> list[pybpf.Link]: ...",
           "    def close(self) -> None: ...", f"    def __enter__(self) -> {cls}: ...",
           "    def __exit__(self, *exc: object) -> None: ..."]
    for sec_attr in ("rodata", "bss", "data"):
        if f".{sec_attr}" in sec_classes:
            sc = sec_classes["." + sec_attr]
            st += ["    @property", f"    def {sec_attr}(self) -> {sc}: ..."]
    stub = "\n".join(st).rstrip() + "\n"
    return module, stub


def output_paths(output: str, obj_path: str = "") -> tuple[str, str]:
    """The module and stub ``pybpf gen -o OUTPUT`` writes: ``skel``, ``skel.py`` and
    ``skel.pyi`` all give ``skel.py`` + ``skel.pyi`` (a module is importable only with
    ``.py``); a directory (existing, or ending in ``/``) gets ``DIR/NAME.py`` +
    ``DIR/NAME.pyi``, NAME the object's file name without ``.bpf.o``/``.o``."""
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        stem = os.path.basename(obj_path)
        for suffix in (".o", ".bpf"):
            stem = stem.removesuffix(suffix)
        name = re.sub(r"\W", "_", stem) or "skel"
        output = os.path.join(output, ("_" + name) if name[0].isdigit() else name)
    for suffix in (".pyi", ".py"):
        if output.endswith(suffix):
            output = output[:-len(suffix)]
            break
    return output + ".py", output + ".pyi"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pybpf gen", description="Generate a typed Python "
                                 "module (+ .pyi stub) for a BPF object.")
    ap.add_argument("object", help="the .bpf.o file")
    ap.add_argument("-o", "--output", help="write MODULE.py and MODULE.pyi (``-o skel`` or "
                    "``-o skel.py``; default: the module on stdout)")
    ap.add_argument("--embed", action="store_true", help="embed the object's bytes in the "
                    "module instead of recording its path")
    ap.add_argument("--map-type", action="append", metavar="MAP=DECL", default=[],
                    help="a map's value type (a ring/perf buffer's record type) as a C "
                    "declaration, for types the object's BTF lacks; repeatable")
    ap.add_argument("--map-key-type", action="append", metavar="MAP=DECL", default=[],
                    help="a map's key type as a C declaration")
    args = ap.parse_args(argv)
    map_types: dict[str, tuple[str | None, str | None]] = {}
    for opt, idx in ((args.map_key_type, 0), (args.map_type, 1)):
        for item in opt:
            mname, sep, decl = item.partition("=")
            if not sep or not mname or not decl.strip():
                print(f"pybpf gen: expected MAP=DECL, got {item!r}", file=sys.stderr)
                return 2
            pair = list(map_types.get(mname, (None, None)))
            pair[idx] = decl
            map_types[mname] = (pair[0], pair[1])
    try:
        module, stub = generate(args.object, embed=args.embed, map_types=map_types)
    except (OSError, ValueError) as e:
        print(f"pybpf gen: {e}", file=sys.stderr)
        return 1
    if args.output:
        py, pyi = output_paths(args.output, args.object)
        with open(py, "w") as f:
            f.write(module)
        with open(pyi, "w") as f:
            f.write(stub)
        print(f"pybpf gen: wrote {py} and {pyi}", file=sys.stderr)
    else:
        sys.stdout.write(module)
    return 0
