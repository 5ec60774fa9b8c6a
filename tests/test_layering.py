"""Import layering of pybpf/: no cycles, no upward edges (architecture review, R4).

Every module of the package has a floor; a module may import only modules on lower
floors. Every import counts: at module level, inside functions and under
``if TYPE_CHECKING:`` (a cycle hidden in a function is still a cycle). A new module
must be given a floor below; a new edge that goes up or sideways fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "pybpf"

# The floors, bottom up (see the review's "house to aim for"). A module's floor is
# that of its name, else of its longest dotted prefix ("attach.tc" -> "attach").
FLOORS: dict[str, float] = {
    # 0: errors and the compiled modules
    "errors": 0, "_libbpf": 0, "_fastpath": 0, "_syscalls": 0,
    # 0.5: checks of call arguments (raise errors' classes)
    "_args": 0.5,
    # 0.5: plain helpers over the above (names of numbers, histogram text)
    "names": 0.5, "histogram": 0.5,
    # 1: the binding, fd ownership, files, small system helpers
    "_ffi": 1, "_fd": 1, "_fs": 1, "_validate": 1, "_netns": 1, "_source": 1,
    "_sysinfo": 1, "_maptypes": 0.5,
    # 2-3: BTF, then values built from BTF
    "btf": 2, "symbolize": 2, "toolchain": 2, "_walk": 2, "_sections": 2,
    "types": 3, "values": 3, "typespec": 2.5,
    # 4: kernel objects that need nothing above them; feature probes
    "maps": 4, "link": 4, "features": 4, "_usdt": 4.5,
    # 5-7: walks, typed maps, globals, readers, attach mechanics, programs
    "globals": 5, "_events": 5, "attach._common": 5, "attach": 5.5, "events": 5,
    "mapkinds": 6, "program": 6, "ringbuf": 6,
    "perfbuf": 7, "_migrate": 6.5, "upgrade": 7.5,
    # 8-9: the object lifecycle over all of the above; the public package
    "object": 8, "codegen": 9, "": 9,  # "" is pybpf/__init__.py
    # 10+: consumers of the public API
    "tools._common": 10, "tools": 11, "tools.audit": 12, "_clicmds": 12, "cli": 13,
    "__main__": 14, "export": 11,
    # exporters (pybpf.export.*) between tools._common and the tools; the agent
    "export._extras": 10.1, "export.host": 10.1, "export.pprof": 10.1,
    "export.events": 10.2, "export.metrics": 10.3, "export.exporters": 10.4, "agent": 12,
}


def _module_name(path: Path, pkg: Path) -> str:
    rel = path.relative_to(pkg).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str, pkg: Path) -> bool:
    base = pkg.joinpath(*name.split(".")) if name else pkg
    return (base.with_suffix(".py").exists() or (base / "__init__.py").exists()
            or any(base.parent.glob(base.name + ".*.so")) or name in ("_libbpf", "_fastpath"))


def edges(root: Path = PKG) -> dict[str, set[str]]:
    """module -> modules it imports (pybpf-internal only, names relative to pybpf)."""
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        me = _module_name(path, root)
        pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".") if pkg else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    targets.add(mod)
                for alias in node.names:
                    sub = f"{mod}.{alias.name}" if mod else alias.name
                    if _is_module(sub, root):
                        targets.add(sub)
                    elif not node.module:
                        targets.add(mod)  # a name from the package itself
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pybpf"):
                targets.add(node.module.removeprefix("pybpf").lstrip("."))  # type: ignore
            elif isinstance(node, ast.Import):
                targets |= {a.name.removeprefix("pybpf").lstrip(".") for a in node.names
                            if a.name == "pybpf" or a.name.startswith("pybpf.")}
        targets.discard(me)
        out[me] = targets
    return out


def floor(name: str) -> int | None:
    probe = name
    while True:
        if probe in FLOORS:
            return FLOORS[probe]
        if not probe:
            return None
        probe = probe.rpartition(".")[0]


def test_every_module_has_a_floor():
    missing = sorted(m for m in edges() if floor(m) is None)
    assert not missing, f"new modules need a floor in tests/test_layering.py: {missing}"


def upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for me, targets in sorted(graph.items()):
        for t in sorted(targets):
            fm, ft = floor(me), floor(t)
            if fm is None or ft is None or ft >= fm:
                bad.append(f"pybpf.{me or '__init__'} (floor {fm}) imports pybpf.{t or '__init__'}"
                           f" (floor {ft})")
    return bad


def test_imports_only_go_down():
    bad = upward(edges())
    assert not bad, "upward or sideways imports:\n  " + "\n  ".join(bad)


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        state[v] = 1
        stack.append(v)
        for w in graph.get(v, ()):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v)
    return cycles


def test_no_import_cycles():
    cycles = cycles_of(edges())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_scan_sees_function_level_and_type_checking_imports(tmp_path):
    # planted: an upward import inside a function and one under TYPE_CHECKING, which
    # together make a cycle maps -> object -> maps; both must be seen
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "maps.py").write_text("def f():\n    from . import object\n")
    (tmp_path / "object.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .maps import Map\n"
        "from ._ffi import lib\n")
    (tmp_path / "_ffi.py").write_text("")
    graph = edges(tmp_path)
    assert graph["maps"] == {"object"} and graph["object"] == {"maps", "_ffi"}
    assert upward(graph) == ["pybpf.maps (floor 4) imports pybpf.object (floor 8)"]
    assert cycles_of(graph)


# --- private state: no module reaches into another's ------------------------------------
# ``x._name`` where ``x`` is not ``self``/``cls`` and no code of this module defines
# ``_name`` (a def, a class, an assignment ``y._name = ...``): the attribute is some
# other module's private state. Names the standard library documents with an
# underscore (os._exit, namedtuple's _fields, ctypes' _SimpleCData, enum's
# _value2member_map_, _sunder_ names) are the standard library's public API.
_STDLIB_UNDERSCORE = {"_exit", "_getframe", "_fields", "_replace", "_asdict", "_make",
                      "_SimpleCData", "_Pointer", "_CFuncPtr"}

# Reaches that were there when this check came (module, attribute), each a debt paid
# since with a public interface (BTFType.btf, Map.owner, Map.from_fd, Section.codec_of,
# Program.load_hint / log_buffer_text, Object.link_detached, typespec.is_numpy): none
# is left, and a new one fails test_no_module_touches_another_modules_private_state.
KNOWN_REACHES: set[tuple[str, str]] = set()


def _defined_here(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
    return names


def private_reaches(root: Path = PKG) -> dict[str, set[str]]:
    """module -> the ``_private`` attributes it reads on objects of other modules."""
    out: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        mine = _defined_here(tree)
        found = set()
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Attribute) and n.attr.startswith("_")):
                continue
            a = n.attr
            if a.startswith("__") or (a.endswith("_") and len(a) > 2) or a in _STDLIB_UNDERSCORE:
                continue  # dunders, _sunder_ names (ctypes, enum)
            if isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                continue
            if a not in mine:
                found.add(a)
        if found:
            out[_module_name(path, root)] = found
    return out


def test_no_module_touches_another_modules_private_state():
    reaches = {(m, a) for m, attrs in private_reaches().items() for a in attrs}
    new = sorted(reaches - KNOWN_REACHES)
    assert not new, ("modules reading another module's private attributes (give them a "
                     "public or documented package-internal interface): "
                     + ", ".join(f"pybpf.{m} -> .{a}" for m, a in new))


def test_upgrade_uses_only_public_interfaces():
    """The live upgrade (upgrade, _migrate) drives Object, OpenMap, Map and Link through
    their public interfaces alone: OpenMap.reuse, Object.take_over,
    Link.update_program / update_prog_fd, Link.owner / fd."""
    reaches = private_reaches()
    assert reaches.get("upgrade", set()) == set() and reaches.get("_migrate", set()) == set()


def test_the_private_scan_sees_a_reach(tmp_path):
    # planted: a module calling another's private method on a foreign object; its own
    # private names, self._x and stdlib underscore names are not reaches
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "upgrade.py").write_text(
        "import os\nclass A:\n    def _mine(self):\n        self._x = 1\n"
        "def f(obj, link, a):\n    obj._load_reusing({})\n    a._mine()\n"
        "    os._exit(0)\n    return link._link_fd(3)\n")
    assert private_reaches(tmp_path) == {"upgrade": {"_load_reusing", "_link_fd"}}
