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
import json
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.test_layers import INNER_LAYERS, MAY_IMPORT, imported_modules, module_name  # noqa: E402

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


def layer_of(package: str, module: str) -> str | None:
    if module in FORMER_PLACES[package]:
        return FORMER_PLACES[package][module]
    best: tuple[str, int] | None = None
    for layer, names in INNER_LAYERS[package].items():
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (layer, len(name))
    return None if best is None else best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the checkout to measure")
    root = parser.parse_args().root.resolve()
    figures = {}
    for package in sorted(INNER_LAYERS):
        arrows: Counter[tuple[str, str]] = Counter()
        for path in sorted((root / package).rglob("*.py")):
            own = layer_of(package, module_name(path, root))
            for imported in imported_modules(path, root):
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
