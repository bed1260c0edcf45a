# # The shape of the code: long functions and module sizes of serving/, providers/ and infra/
#
# A function over 60 lines usually does several jobs that could each have a name; this lists them
# (the goal is none) and the size of every module, largest first.
#
#     .venv/bin/python bench/code_shape.py
#
# The last line is one JSON object: {"functions_over_60_lines": N, "longest_function_lines": N,
# "modules": N, "largest_module_lines": N}.

from __future__ import annotations

import ast
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "providers", "infra")
LONG_FUNCTION_LINES = 60


def main() -> None:
    functions: list[tuple[int, str]] = []
    modules: list[tuple[int, str]] = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            text = path.read_text()
            modules.append((len(text.splitlines()), str(path.relative_to(REPO_ROOT))))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    functions.append((lines, f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}"))
    functions.sort(reverse=True)
    modules.sort(reverse=True)
    long = [entry for entry in functions if entry[0] > LONG_FUNCTION_LINES]
    print(f"functions over {LONG_FUNCTION_LINES} lines: {len(long)}")
    for lines, where in long:
        print(f"  {lines:4d}  {where}")
    print("longest functions:")
    for lines, where in functions[:5]:
        print(f"  {lines:4d}  {where}")
    print("modules, largest first:")
    for lines, where in modules[:10]:
        print(f"  {lines:4d}  {where}")
    print(json.dumps({"functions_over_60_lines": len(long), "longest_function_lines": functions[0][0],
                      "modules": len(modules), "largest_module_lines": modules[0][0]}))  # fmt: skip


if __name__ == "__main__":
    main()
