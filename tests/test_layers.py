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


# ---- inside a package: layers that may only look down ----------------------------------------------

# Each package's layers, by the modules they hold (a folder, or named modules), and the layers each
# may import besides its own. Anything else is an import against the layers.
INNER_LAYERS = {
    "providers": {
        # The resources (their provider classes are pickled by reference into every stack's state, so
        # these modules keep their paths) and their common base.
        "resources": {"providers", "providers.base", "providers.environment", "providers.secret", "providers.volume",
                      "providers.job", "providers.app", "providers.http_check"},  # fmt: skip
        # Starting, recording, following and re-attaching runs of jobs and deploys.
        "run machinery": {"providers.runs"},
        # Talking to Modal (the private client APIs: providers/modal_internals.py, by the project's rule).
        "Modal access": {"providers.modal_access", "providers.modal_internals"},
        # Errors, progress lines, redaction, the engine watch.
        "shared basics": {"providers.shared"},
    },
    "serving": {
        # Local tooling over stack files: what a stack's containers would run.
        "tooling": {"serving.render", "serving.stack_file"},
        # What runs on Modal: the app, its jobs and the SGLang server's lifecycle.
        "containers": {"serving.app", "serving.jobs", "serving.lifecycle", "serving.warmup"},
        # The one config model and what both sides derive from it.
        "config": {"serving", "serving.config", "serving.commands", "serving.jit_caches", "serving.modal_rules",
                   "serving.log_redaction", "serving.versions"},  # fmt: skip
    },
}
MAY_IMPORT = {
    "providers": {
        "resources": {"run machinery", "Modal access", "shared basics"},
        "run machinery": {"Modal access", "shared basics"},
        "Modal access": {"shared basics"},
        "shared basics": set(),
    },
    # Tooling and containers are siblings: neither runs the other's code.
    "serving": {"tooling": {"config"}, "containers": {"config"}, "config": set()},
}
# Resource modules share code only through base.py: none imports another resource module.
RESOURCE_MODULES = {"providers.environment", "providers.secret", "providers.volume", "providers.job", "providers.app",
                    "providers.http_check"}  # fmt: skip


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(package: str, module: str) -> str | None:
    """The layer that holds `module`: the one naming the longest module or package that contains it."""
    best: tuple[str, int] | None = None
    for layer, names in INNER_LAYERS[package].items():
        for name in names:
            holds = module == name or module.startswith(name + ".")
            if holds and (best is None or len(name) > best[1]):
                best = (layer, len(name))
    return None if best is None else best[0]


def imported_modules(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Every module that a module of the checkout at `root` imports (absolute or relative), lazily or
    not; a name imported from a package counts as that package's submodule when one of that name exists."""
    current = module_name(path, root)
    package_of = current if path.name == "__init__.py" else current.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of.split(".")[: len(package_of.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{module}.{name}" for name in names
                          if root.joinpath(*module.split("."), name).with_suffix(".py").exists()
                          or (root.joinpath(*module.split("."), name) / "__init__.py").exists()]  # fmt: skip
            found.update(submodules)
            if len(submodules) < len(names):
                found.add(module)  # something defined in the module itself
    return found


@pytest.mark.parametrize("package", sorted(INNER_LAYERS))
def test_every_module_belongs_to_a_layer(package: str) -> None:
    unplaced = [module_name(path) for path in sorted((REPO_ROOT / package).rglob("*.py"))
                if layer_of(package, module_name(path)) is None]  # fmt: skip
    assert unplaced == [], f"place these in tests/test_layers.py INNER_LAYERS[{package!r}]"


@pytest.mark.parametrize("package", sorted(INNER_LAYERS))
def test_no_module_imports_against_the_layers(package: str) -> None:
    against = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        module = module_name(path)
        own = layer_of(package, module)
        for imported in sorted(imported_modules(path)):
            if imported.split(".")[0] != package or own is None:
                continue
            target = layer_of(package, imported)
            if target is not None and target != own and target not in MAY_IMPORT[package][own]:
                against.append(f"{module} ({own}) imports {imported} ({target})")
    assert against == [], "an import against the layers: " + "; ".join(against)


def test_no_resource_module_imports_another() -> None:
    crossing = [
        f"{module_name(path)} imports {imported}"
        for path in sorted((REPO_ROOT / "providers").glob("*.py"))
        if module_name(path) in RESOURCE_MODULES
        for imported in sorted(imported_modules(path) & RESOURCE_MODULES)
        if imported != module_name(path)
    ]
    assert crossing == [], "resource modules share code through providers/base.py only: " + "; ".join(crossing)
