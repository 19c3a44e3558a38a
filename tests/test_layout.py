"""The package's layout shows the architecture: subpackages stack without cycles, and every
import points down the stack that docs/architecture.md's "Layout" section draws."""

import ast
import pathlib

import mlp_xp as mx

#: top to bottom; a module imports only modules of a lower line, or of its own group
STACK = [
    ("mlp_xp", "mlp_xp.__main__"),  # the public API (re-exports), and python -m mlp_xp
    ("mlp_xp.cli", "mlp_xp.sklearn"),
    ("mlp_xp.tools",),
    ("mlp_xp.model",),
    ("mlp_xp.checkpoint", "mlp_xp.export"),
    ("mlp_xp.train",),
    ("mlp_xp.io",),
    ("mlp_xp.data",),
    ("mlp_xp.nn", "mlp_xp.optim"),
    ("mlp_xp.ops",),
    ("mlp_xp._backend", "mlp_xp._errors", "mlp_xp._interrupts", "mlp_xp._math", "mlp_xp._plotting",
     "mlp_xp._types"),
]


def _import_graph():
    """mlp_xp's modules and the mlp_xp modules each imports (at the top or inside functions; not those
    under ``if TYPE_CHECKING:``, which only a type checker runs: a signature may name a class above)."""
    root = pathlib.Path(mx.__file__).resolve().parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(("mlp_xp",) + parts).removesuffix(".__init__")
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = graph.setdefault(name, set())
        tree = ast.parse(path.read_text())
        typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                       for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                if node.module:
                    targets.add(".".join(base + [node.module]))
                else:
                    targets.update(".".join(base + [alias.name]) for alias in node.names)
    return graph


def test_no_import_cycle_between_mlp_xp_modules():
    graph = _import_graph()
    graph = {name: {t for t in targets if t in graph and t != "mlp_xp"} for name, targets in graph.items()}
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in graph[name]:
            assert state.get(target) != "open", f"import cycle: {' -> '.join(path + [target])}"
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert graph["mlp_xp.io"] <= {"mlp_xp._errors"}  # the file format only: no model code


def _place(name):
    """(line of STACK, group) of a module: its longest matching group."""
    best = None
    for line, groups in enumerate(STACK):
        for group in groups:
            if (name == group or name.startswith(group + ".")) and (best is None or len(group) > len(best[1])):
                best = (line, group)
    assert best is not None, f"{name} has no place in STACK"
    return best


def test_every_import_points_down_the_stack():
    graph = _import_graph()
    upward = []
    for name, targets in graph.items():
        line, group = _place(name)
        for target in targets:
            if target not in graph:  # a name, not a module: its package's
                target = target.rsplit(".", 1)[0]
            if target == "mlp_xp" and line <= 1:  # (the command line and the estimators use the public API)
                continue
            target_line, target_group = _place(target)
            if not (target_line > line or target_group == group):
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_the_stack_has_the_subpackages_it_names():
    root = pathlib.Path(mx.__file__).resolve().parent
    for package in ("nn", "optim", "train", "data", "tools", "ops"):
        assert (root / package / "__init__.py").is_file(), package
    assert sorted(path.name for path in root.glob("*.py")) == [
        "__init__.py", "__main__.py", "_backend.py", "_errors.py", "_interrupts.py", "_math.py", "_plotting.py",
        "_types.py", "checkpoint.py", "cli.py", "export.py", "io.py", "model.py", "sklearn.py"]
