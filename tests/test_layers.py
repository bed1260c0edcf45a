"""The dependency direction of the repository: infra -> providers, infra -> serving.config; serving and
providers never import infra; serving never imports pulumi; providers know nothing about the model,
and take from serving only two modules that know nothing of it either and that the container needs
too: Modal's own naming rules (serving/modal_rules.py) and secret redaction (serving/log_redaction.py).

Checked twice: statically (every import statement of every module, so a lazy import inside a function
counts too) and by importing the packages in a fresh interpreter (so an indirect import counts too)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Top-level packages each layer must never import.
FORBIDDEN_IMPORTS = {
    "serving": {"infra", "providers", "pulumi"},
    "providers": {"infra", "serving"},
}

# The one module of a forbidden package a layer may use.
ALLOWED_MODULES = {"providers": {"serving.modal_rules", "serving.log_redaction"}}

# Words that would mean the providers know what they deploy (the model, its server).
MODEL_WORDS = re.compile(r"glm|sglang", re.IGNORECASE)


def imported_packages(path: Path, allowed: set[str] = frozenset()) -> set[str]:
    """Top-level package of every absolute import in the module (relative imports stay inside it),
    except imports of an allowed module."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return {module.split(".")[0] for module in modules - allowed}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_IMPORTS))
def test_no_module_imports_a_layer_above_it(layer: str) -> None:
    offending = {
        str(path.relative_to(REPO_ROOT)): sorted(
            imported_packages(path, ALLOWED_MODULES.get(layer, set())) & FORBIDDEN_IMPORTS[layer]
        )
        for path in sorted((REPO_ROOT / layer).rglob("*.py"))
    }
    assert {path: found for path, found in offending.items() if found} == {}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_IMPORTS))
def test_importing_a_layer_loads_nothing_above_it(layer: str) -> None:
    modules = sorted(
        f"{layer}.{path.stem}" for path in (REPO_ROOT / layer).glob("*.py") if path.stem not in ("__init__", "__main__")
    )
    # A package counts as loaded by its modules: `serving` itself is loaded with serving.modal_rules.
    allowed = sorted(ALLOWED_MODULES.get(layer, set()) | {m.split(".")[0] for m in ALLOWED_MODULES.get(layer, set())})
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"loaded = {{m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_IMPORTS[layer])!r}}}\n"
        f"print(sorted(loaded - set({allowed!r})))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_providers_know_nothing_about_the_model() -> None:
    mentions = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sorted((REPO_ROOT / "providers").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if MODEL_WORDS.search(line)
    ]
    assert mentions == []
