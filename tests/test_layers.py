"""The import rule of docs/architecture.md: a package imports only its own modules and lower layers.

Checked on the source by AST, function-level imports included, so an import hidden inside a
function to dodge a cycle counts like any other.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "facegate"
LAYER = {"errors": 0, "config": 0, "clock": 0, "vocab": 0, "images": 0,
         "models": 1, "matching": 1, "storage": 1,
         "engine": 2,
         "gallery": 3, "liveness": 3, "evaluation": 3,
         "workflows": 4,
         "service": 5, "cli": 5}
# (importer package, imported package) pairs still waiting for their move: empty at the end.
ALLOWED: set[tuple[str, str]] = set()


def package(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def facegate_imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, [f"{node.module}.{a.name}" for a in node.names]  # covers `from facegate import x`
        elif isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts or path.name in ("__main__.py", "__init__.py") and path.parent == ROOT:
            continue
        yield path


def test_every_module_belongs_to_a_layer():
    assert {package(p) for p in modules()} <= set(LAYER), sorted({package(p) for p in modules()} - set(LAYER))


def test_no_import_points_up_or_sideways():
    bad = set()
    for path in modules():
        src = package(path)
        for line, names in facegate_imports(path):
            for name in names:
                parts = name.split(".")
                if parts[0] != "facegate" or len(parts) < 2 or parts[1] == src:
                    continue
                dst = parts[1]
                assert dst in LAYER, f"{path.relative_to(ROOT)}:{line} imports {name}, which is in no layer"
                up = LAYER[dst] > LAYER[src] or (LAYER[dst] == LAYER[src] and LAYER[src] > 0)
                if up and (src, dst) not in ALLOWED:
                    bad.add(f"{path.relative_to(ROOT)}:{line}: {src} (layer {LAYER[src]}) imports {name} "
                            f"(layer {LAYER[dst]})")
    assert not bad, "\n".join(sorted(bad))


def test_the_allow_list_is_empty():
    assert not ALLOWED, f"layer exceptions left: {sorted(ALLOWED)}"
