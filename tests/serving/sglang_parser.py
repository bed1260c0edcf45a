"""The pinned SGLang release's own argument handling, run on CPU, for the command checks.

Launch: `python -m sglang.launch_server ARGS` calls `sglang.srt.server_args.prepare_server_args(ARGS)`
(argparse built by `ServerArgs.add_cli_args`, plus the `--config` YAML merge); `parse_launch` calls
exactly that.

Compile: `python -m sglang.compile_deep_gemm ARGS` builds its parser from `ServerArgs.add_cli_args`
and its own `CompileArgs`, then `compile_server_args` turns the result into the ServerArgs it
compiles with. Importing that module pulls in SGLang's whole model-config package, which needs
`transformers` and a *working* `torchvision` (its C ops); the only torchvision wheels on PyPI are
CUDA builds whose `_C.so` links against CUDA torch, so with the CPU torch of the test extra
`import torchvision` fails ("operator torchvision::nms does not exist"). Instead of importing the
module, `parse_compile` reads the installed file of the pinned release and runs its own code: the
`CompileArgs` class, `compile_server_args`, and the `if __name__ == "__main__":` block, with only
`run_compile` (which starts a GPU server) replaced by a recorder. Every other name the block and
those definitions use is imported from where the file imports it, so a change in the release
(a new flag clash, a renamed helper, a new step before `run_compile`) fails these checks.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import logging
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglang.srt.server_args import ServerArgs, prepare_server_args

LAUNCH_MODULE = "sglang.launch_server"
COMPILE_MODULE = "sglang.compile_deep_gemm"

# What the compile script defines and runs, by name, in the file of the pinned release.
_COMPILE_DEFINITIONS = ("CompileArgs", "compile_server_args")
_COMPILE_LAUNCHER = "run_compile"
# Module name the copied definitions live under.
_COMPILE_COPY = "_pinned_sglang_compile_deep_gemm"


def module_args(argv: list[str], module: str) -> list[str]:
    """The arguments after `python3 -m <module>`, checking that prefix."""
    assert argv[:3] == ["python3", "-m", module], f"expected `python3 -m {module} ...`, got {argv[:3]}"
    return argv[3:]


def server_parser() -> argparse.ArgumentParser:
    """The launch parser, as prepare_server_args builds it (for looking at its actions)."""
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return parser


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    # prepare_server_args calls logging.basicConfig(force=True), which would replace pytest's
    # handlers and the level of the whole test process.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def parse_launch(args: list[str]) -> ServerArgs:
    """What `python -m sglang.launch_server <args>` hands to the server (before device resolution)."""
    with _root_logging_kept():
        return prepare_server_args(list(args))


@dataclass
class CompileRun:
    server_args: ServerArgs  # what compile_server_args produced, i.e. what the compile server runs
    compile_args: Any  # the release's CompileArgs instance
    printed: str  # what the script printed before starting the server


def parse_compile(args: list[str]) -> CompileRun:
    """Run the pinned compile_deep_gemm's `__main__` block on `args`, up to starting the server."""
    recorded: dict[str, Any] = {}

    def record_run_compile(server_args, compile_args):
        recorded["server_args"], recorded["compile_args"] = server_args, compile_args

    namespace = {**_compile_namespace(), _COMPILE_LAUNCHER: record_run_compile}
    printed = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [COMPILE_MODULE, *args]  # the block calls parser.parse_args(), which reads sys.argv
    try:
        with contextlib.redirect_stdout(printed):
            exec(_compile_main_code(), namespace)
    finally:
        sys.argv = saved_argv
    assert "server_args" in recorded, f"the {COMPILE_MODULE} main block no longer calls {_COMPILE_LAUNCHER}"
    return CompileRun(recorded["server_args"], recorded["compile_args"], printed.getvalue())


def compile_parser() -> argparse.ArgumentParser:
    """The compile script's parser: ServerArgs' flags plus the release's CompileArgs flags."""
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    _compile_namespace()["CompileArgs"].add_cli_args(parser)
    return parser


def compile_module_file() -> Path:
    spec = importlib.util.find_spec(COMPILE_MODULE)
    assert spec is not None and spec.origin, f"{COMPILE_MODULE} is not installed"
    return Path(spec.origin)


def _compile_tree() -> ast.Module:
    return ast.parse(compile_module_file().read_text(encoding="utf-8"))


def _compile_main_code():
    tree = _compile_tree()
    mains = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test).replace('"', "'") == "__name__ == '__main__'"
    ]
    assert len(mains) == 1, f"{COMPILE_MODULE} has no single `if __name__ == '__main__':` block"
    return compile(ast.Module(body=mains[0].body, type_ignores=[]), str(compile_module_file()), "exec")


_namespace_cache: dict[str, Any] = {}


def _compile_namespace() -> dict[str, Any]:
    """Globals for the compile script's code: its definitions plus the names they use, imported
    from where the file imports them (only those, so nothing GPU-only is touched)."""
    if _namespace_cache:
        return _namespace_cache
    tree = _compile_tree()
    definitions = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name in _COMPILE_DEFINITIONS
    ]
    found = {node.name for node in definitions}
    assert found == set(_COMPILE_DEFINITIONS), f"{COMPILE_MODULE} lacks {set(_COMPILE_DEFINITIONS) - found}"
    main_body = [node for node in tree.body if isinstance(node, ast.If)]
    used = {node.id for part in (*definitions, *main_body) for node in ast.walk(part) if isinstance(node, ast.Name)}
    # A module of its own name (dataclasses look their class's module up in sys.modules); not the
    # real name, so `import sglang.compile_deep_gemm` elsewhere is not answered by this partial copy.
    module = types.ModuleType(_COMPILE_COPY)
    module.__file__ = str(compile_module_file())
    sys.modules[_COMPILE_COPY] = module
    namespace = module.__dict__
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name) in used:
                    namespace[alias.asname or alias.name] = importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                bound = alias.asname or alias.name
                if bound in used and bound != _COMPILE_LAUNCHER:
                    namespace[bound] = getattr(importlib.import_module(node.module), alias.name)
    exec(compile(ast.Module(body=definitions, type_ignores=[]), str(compile_module_file()), "exec"), namespace)
    _namespace_cache.update(namespace)
    return _namespace_cache
