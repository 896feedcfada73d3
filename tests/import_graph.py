"""Prints the import graph of mokd_fast and pipelines as JSON (run by tests/test_contracts.py).

``module_level``: imports at module level, including those under ``if TYPE_CHECKING:`` and in ``try``
blocks (what an import cycle is made of). ``all``: every import, those inside functions (the lazy
ones) included, plus string imports: a string literal naming a project module, optionally with
``:attribute`` (the method registry's entries, the package's lazy names).
"""

import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRING_IMPORT = re.compile(r"((?:mokd_fast|pipelines)(?:\.\w+)+)(?::\w+)?")  # a dotted path: the bare "mokd_fast" is a checkpoint key


def module_imports(path: Path, modules: set[str], everywhere: bool = False) -> set[str]:
    """The project modules ``path`` imports at module level (``everywhere``: anywhere, strings included)."""
    found: set[str] = set()

    def add(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.update([full] if full in modules else [node.module] if node.module in modules else [])
        elif everywhere and isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = STRING_IMPORT.fullmatch(node.value)
            if match and match.group(1) in modules:
                found.add(match.group(1))

    def visit(nodes: list) -> None:
        for node in nodes:
            add(node)
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body + getattr(node, "orelse", []))

    tree = ast.parse(path.read_text())
    if everywhere:
        for node in ast.walk(tree):
            add(node)
    else:
        visit(tree.body)
    return found


def import_graph(everywhere: bool = False) -> dict[str, list[str]]:
    """``{module: sorted project modules it imports}``."""
    paths = {}
    for path in [*(REPO / "mokd_fast").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")]:
        parts = path.relative_to(REPO).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: sorted(module_imports(path, set(paths), everywhere) - {name}) for name, path in sorted(paths.items())}


if __name__ == "__main__":
    print(json.dumps({"module_level": import_graph(), "all": import_graph(everywhere=True)}))
