"""Prints the module-level import graph of mokd_fast and pipelines as JSON (run by tests/test_contracts.py).

Imports at module level count, including those under ``if TYPE_CHECKING:`` and in ``try`` blocks;
imports inside functions (the lazy ones) do not.
"""

import ast
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports at module level."""
    found: set[str] = set()

    def visit(nodes: list) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    found.update([full] if full in modules else [node.module] if node.module in modules else [])
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body + getattr(node, "orelse", []))

    visit(ast.parse(path.read_text()).body)
    return found


def import_graph() -> dict[str, list[str]]:
    """``{module: sorted project modules it imports}``."""
    paths = {}
    for path in [*(REPO / "mokd_fast").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")]:
        parts = path.relative_to(REPO).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: sorted(module_imports(path, set(paths)) - {name}) for name, path in sorted(paths.items())}


if __name__ == "__main__":
    print(json.dumps(import_graph()))
