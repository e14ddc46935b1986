"""Rewrite each notebook's `parameters` cell from the config class it binds (metadata.lafite.config),
so the cell lists every field with its type and default (lafite_core.params.parameters_cell).

    python scripts/sync_notebook_parameters.py      # after changing a config dataclass
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from lafite_core.params import parameters_cell
from lafite_core.runner import notebook_binding

REPO = Path(__file__).resolve().parents[1]


def sync(path: Path) -> bool:
    """Rewrite the cell if it differs; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    cls, _ = notebook_binding(path)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    wanted = parameters_cell(cls)
    if cell.source == wanted:
        return False
    cell.source = wanted
    nbformat.write(nb, path)
    return True


def main() -> int:
    changed = [p.name for p in sorted((REPO / "notebooks").glob("*.ipynb")) if sync(p)]
    print("rewritten: " + (", ".join(changed) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
