"""The package's layers (DESIGN.md): a lower package never imports a higher one, so the
composition root (`build`, and `resume`, `adaptation` and `cli` above it) is imported by no
package below."""

import ast
from pathlib import Path

import fedmeta

ROOT = Path(fedmeta.__file__).parent
# each package or top-level module, and the layers above it, which it must not import
LEAVES = {"atomic", "seeding", "params", "errors", "config", "optim", "data", "models",
          "device"}
CORE = {"learners", "server", "privacy", "attacks", "evaluation", "ratings"}
COMPOSITION = {"build", "resume", "adaptation", "cli", "flower", "bench", "report"}
ABOVE = {**{leaf: CORE | {"engine"} | COMPOSITION for leaf in LEAVES},
         **{core: {"engine"} | COMPOSITION for core in CORE},
         "engine": COMPOSITION,
         # vertical FL stands beside the engine: its own loop over learners' pieces
         "vertical": COMPOSITION}


def imported(path: Path) -> set[str]:
    """The fedmeta modules `path` imports, as their first name under fedmeta."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names
            if name.startswith("fedmeta.") and name.count(".") >= 1}


def layer(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def test_no_module_imports_a_layer_above_its_own():
    wrong = [f"{path.relative_to(ROOT)} imports fedmeta.{name}"
             for path in sorted(ROOT.rglob("*.py")) if layer(path) in ABOVE
             for name in imported(path) if name in ABOVE[layer(path)]]
    assert not wrong, "\n".join(wrong)


def test_every_package_has_a_layer():
    assert {layer(path) for path in ROOT.rglob("*.py")} - {"__init__"} <= (
        LEAVES | CORE | COMPOSITION | {"engine", "vertical"})
