"""The README's operator guide, executed: every `pulumi` command of its shell blocks, in order, on a
fresh CLI world and control plane, as an operator would type them.

How each line runs:
- `pulumi preview|up ...`: through the Automation API with the same stack and flags (tests/stack/cli.py
  says why: the Python language host is not buildable here); the CLI binary, engine and state are
  the real ones.
- every other line that calls `pulumi` or the Modal CLI: literally, with bash, in the project copy,
  with the world's environment (a value the CLI would prompt for is piped in). A `destroy` or
  `refresh` the guide leaves to the CLI's confirmation menu gets `--yes`: that menu needs a terminal.
- lines that set up the machine (setup, PATH, passphrase, the Modal login) are listed in `SET_UP_BY_THE_WORLD`:
  the world does each of them in its own way. Lines that need another backend are run by the test
  named in `RUN_ELSEWHERE`.
A shell line of the guide that is none of these fails the test, so a new command cannot go untested.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .cli import PULUMI_VERSION
from .conftest import rig
from .harness import TEST_HF_TOKEN

README = Path(__file__).resolve().parents[2] / "README.md"
GUIDE_START = "<!-- operator guide below -->"
GUIDE_END = "## Working on the code"

SET_UP_BY_THE_WORLD = {
    "./scripts/setup": "what CI runs before the suite",
    'export PATH="$PWD/.tools/bin:$PATH"': "the world puts the pinned CLI first on PATH",
    "export PULUMI_CONFIG_PASSPHRASE_FILE=~/.glm-modal-passphrase": "the world sets PULUMI_CONFIG_PASSPHRASE",
    ".venv/bin/modal token new": "the world points Modal at the control plane with its token",
}
RUN_ELSEWHERE = {
    "pulumi login 's3://<bucket>?endpoint=http://<host>:9000&use_path_style=true&region=us-east-1'":
        "tests/stack/test_team_backend.py",
}  # fmt: skip

# Commands that must fail, and what their failure must say.
EXPECTED_FAILURES = {
    "pulumi destroy --stack prod": ("cannot be deleted\n", "because it is protected", "weights-volume"),
}
# What a command that succeeds must say.
EXPECTED_OUTPUT = {
    "pulumi destroy --stack staging": ("kept on Modal", "modal volume delete glm51-staging-model-weights"),
}
# What a command that prompts reads from its standard input.
PROMPTED = {"pulumi config set --secret glm-modal:hfToken --stack staging": TEST_HF_TOKEN + "\n",
            "pulumi config set --secret glm-modal:hfToken --stack prod": TEST_HF_TOKEN + "\n"}  # fmt: skip
PROGRAM_FLAGS = {"--diff": "diff", "--refresh": "refresh", "--expect-no-changes": "expect_no_changes"}


@dataclass(frozen=True)
class Line:
    command: str  # without its comment

    @property
    def words(self) -> list[str]:
        return shlex.split(self.command)

    @property
    def runs_the_program(self) -> bool:
        return self.words[:2] in (["pulumi", "preview"], ["pulumi", "up"])

    @property
    def executed_literally(self) -> bool:
        literal = (".venv/bin/modal volume ", ".venv/bin/modal environment ",
                   ".venv/bin/python -m providers.runs.run_records ")  # fmt: skip
        return re.search(r"(^|\| |\$\()pulumi ", self.command) is not None or self.command.startswith(literal)


def guide_lines() -> list[Line]:
    text = README.read_text()
    guide = text[text.index(GUIDE_START) : text.index(GUIDE_END)]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", guide, re.DOTALL):
        for raw in block.splitlines():
            command = re.split(r"\s+#\s", raw, maxsplit=1)[0].strip()
            if command:
                lines.append(Line(command))
    return lines


def test_every_shell_line_of_the_guide_is_run_here_or_by_a_named_test() -> None:
    lines = guide_lines()
    assert len(lines) > 20
    for line in lines:
        known = line.command in SET_UP_BY_THE_WORLD or line.command in RUN_ELSEWHERE
        assert known or line.runs_the_program or line.executed_literally, f"no test runs: {line.command}"
    for command, test_file in RUN_ELSEWHERE.items():
        source = (README.parents[0] / test_file).read_text()
        assert '"login"' in source and "use_path_style=true" in source and "endpoint=" in source, command


def program_options(line: Line) -> tuple[str, str, dict[str, bool]]:
    words = line.words
    stack = words[words.index("--stack") + 1]
    options = {}
    for word in words[2:]:
        if word.startswith("--") and word not in ("--stack", "--yes"):
            assert word in PROGRAM_FLAGS, f"{line.command}: flag {word} has no Automation API mapping here"
            options[PROGRAM_FLAGS[word]] = True
    return words[1], stack, options


def test_the_operator_guide_runs_as_written() -> None:
    with rig() as running:
        world = running.world
        # An operator's machine: `pulumi login` picks the backend. `--local` means `file://~`, and the
        # CLI resolves `~` from the user database, not $HOME: the login goes to a directory of the
        # world instead, by the same command with the same kind of URL.
        del world.env["PULUMI_BACKEND_URL"]
        (world.root / "operator-state").mkdir()
        substitutes = {"pulumi login --local": f"pulumi login file://{world.root / 'operator-state'}"}
        ran = []
        exports: list[str] = []  # the guide's `export GLM_...` lines, which its snippets read
        for line in guide_lines():
            if line.command in SET_UP_BY_THE_WORLD or line.command in RUN_ELSEWHERE:
                continue
            if line.runs_the_program:
                operation, stack, options = program_options(line)
                outcome = world.program_run(operation, stack, **options)
                output = outcome.text
                exit_code = outcome.exit_code
            else:
                command = substitutes.get(line.command, line.command)
                if line.words[:2] in (["pulumi", "destroy"], ["pulumi", "refresh"]) and "--yes" not in line.words:
                    command += " --yes"
                done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=world.project,
                                      env=world.env, input=PROMPTED.get(line.command, ""), capture_output=True,
                                      text=True, timeout=600)  # fmt: skip
                output, exit_code = done.stdout + done.stderr, done.returncode
            ran.append(line.command)
            print(f"$ {line.command} -> {exit_code}")
            expected = EXPECTED_FAILURES.get(line.command)
            if expected is None:
                assert exit_code == 0, f"{line.command} exited {exit_code}:\n{output}"
            else:
                assert exit_code != 0, f"{line.command} was expected to fail:\n{output}"
                assert all(part in output for part in expected), f"{line.command}:\n{output}"
            assert all(part in output for part in EXPECTED_OUTPUT.get(line.command, ())), f"{line.command}:\n{output}"
            if line.command.startswith("pulumi login"):
                assert "Logged in" in output and "operator-state" in output
            if line.command.startswith(".venv/bin/python -m providers.runs.run_records list"):
                assert "serving.app.download_model: function call fc-" in output and "succeeded" in output, output
            if line.command.startswith(".venv/bin/python -m providers.runs.run_records stop"):
                assert "already ended (succeeded); nothing to stop" in output, output
            if line.command == "pulumi version":
                assert output.strip() == PULUMI_VERSION
            if line.command.startswith("export GLM_"):
                exports.append(line.command)
            if line.command.startswith("pulumi stack output smoke_test_curl"):
                # "run the printed command" after the guide's exports: the API key from `pulumi config
                # get` and the stack's proxy auth token from its outputs pass the edge and open the API.
                chats_before = len(running.web.chat_requests())
                curl = subprocess.run(["bash", "-c", "; ".join([*exports, output])], cwd=world.project,
                                      env=world.env, capture_output=True, text=True, timeout=60)  # fmt: skip
                assert curl.returncode == 0 and '"content": "ready"' in curl.stdout, curl.stdout + curl.stderr
                assert [authorized for _, _, authorized in running.web.chat_requests()[chats_before:]] == [True]
        stack_files = {stack: world.stack_file(stack).read_text() for stack in ("staging", "prod")}
        environments = set(running.cp.state.environments)
        remaining = json.loads(world.run("stack", "ls", "--json").stdout)

    # Everything the guide says was done: both stacks were applied and then destroyed.
    assert any(command.startswith("pulumi up --stack prod") for command in ran)
    assert "pulumi destroy --stack staging" in ran
    assert ran[-1] == ".venv/bin/modal environment delete glm-staging --yes"
    assert "glm-staging" not in environments and "glm-prod" in environments
    for text in stack_files.values():
        assert "encryptionsalt:" in text and "secure: v1:" in text and TEST_HF_TOKEN not in text
    counts = {stack["name"]: stack.get("resourceCount", 0) for stack in remaining}
    assert counts["staging"] == 0 and counts["prod"] > 0, counts  # prod keeps its protected volumes
