# # Import arrows between the layers of providers/ and serving/
#
# Counts, for each pair of layers, how many imports of one module by another run from the first to
# the second, by the layers tests/test_layers.py enforces, and marks those that run against them.
# `--root DIR` measures another checkout (e.g. `git worktree add /tmp/before <commit>`), whose modules
# may still sit where they were before providers/ had layers (FORMER_PLACES says where they belong).
#
#     .venv/bin/python bench/layer_imports.py [--root DIR]
#
# The last line is one JSON object: {"<package>": {"arrows": N, "against_the_layers": N}, ...}.

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.test_layers import INNER_LAYERS, MAY_IMPORT  # noqa: E402

# Modules of the layout before the layering, by the layer their code belongs to now.
FORMER_PLACES = {
    "providers": {
        "providers.runner": "run machinery", "providers.supervisor": "run machinery",
        "providers.job_runs": "run machinery", "providers.run_records": "run machinery",
        "providers.module_runs": "run machinery", "providers.retry": "Modal access",
        "providers.deployments": "Modal access", "providers.job_calls": "Modal access",
        "providers.engine_watch": "shared basics",
    },  # fmt: skip
    "serving": {},
}


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(package: str, module: str) -> str | None:
    if module in FORMER_PLACES[package]:
        return FORMER_PLACES[package][module]
    best: tuple[str, int] | None = None
    for layer, names in INNER_LAYERS[package].items():
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (layer, len(name))
    return None if best is None else best[0]


def imports_of(root: Path, path: Path) -> set[str]:
    current = module_name(root, path)
    package_of = current if path.name == "__init__.py" else current.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of.split(".")[: len(package_of.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = root.joinpath(*module.split("."), alias.name)
                exists = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                found.add(f"{module}.{alias.name}" if exists else module)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the checkout to measure")
    root = parser.parse_args().root.resolve()
    figures = {}
    for package in sorted(INNER_LAYERS):
        arrows: Counter[tuple[str, str]] = Counter()
        for path in sorted((root / package).rglob("*.py")):
            own = layer_of(package, module_name(root, path))
            for imported in imports_of(root, path):
                target = layer_of(package, imported) if imported.split(".")[0] == package else None
                if own is not None and target is not None and imported != package:
                    arrows[(own, target)] += 1
        allowed = MAY_IMPORT[package]
        against = {pair: n for pair, n in arrows.items() if pair[0] != pair[1] and pair[1] not in allowed[pair[0]]}
        print(f"{package}/ ({root})")
        print(f"  {'from layer':<16} {'to layer':<16} {'imports':>7}")
        for (source, target), count in sorted(arrows.items()):
            mark = "  <- against the layers" if (source, target) in against else ""
            print(f"  {source:<16} {target:<16} {count:>7}{mark}")
        figures[package] = {"arrows": sum(arrows.values()), "against_the_layers": sum(against.values())}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
