"""Show what a stack's containers will run: `python -m serving.render --stack staging`.

Reads `Pulumi.<stack>.yaml` (or `--file PATH`), validates its `glm-modal:deployment` object with the
same model the Pulumi program and the container use, and prints one JSON object:

    {"launch": [argv of the SGLang server], "compile": [argv of the DeepGEMM compile], "env": {...}}

`env` is what the SGLang process gets on top of the image's base environment (serving/commands.py's
`subprocess_env`, which the lifecycle starts SGLang with). Secret values are never read: the API key
reaches SGLang only as a private `--config` YAML file written at container start (the server class
removes it from SGLang's environment), so the launch argv shows that argument with a placeholder
path. (The config
itself also reaches the container, as JSON in `GLM_DEPLOYMENT_CONFIG`; it is the input of this
command, so not repeated.)

An invalid stack file prints one `glm-modal:deployment.<field.path>: message` line per problem to
stderr (the key as `pulumi preview` names it) and exits 2.

Everything it prints, output and errors, is redacted of the credentials the stack file holds in
plaintext (serving/stack_file.py `plaintext_credentials`: all of the stack's secrets render can
know; the encrypted ones it cannot read), in every spelling (serving/log_redaction.py): a rejected
value is quoted in its error, and a valid one is part of the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from pydantic import ValidationError

from serving import commands
from serving.config import DeploymentConfig, format_errors
from serving.log_redaction import Redactor
from serving.stack_file import (
    DEPLOYMENT_CONFIG_KEY,
    StackFileError,
    parse_deployment,
    plaintext_credentials,
    read_stack_file,
    stack_file_path,
)

# Stands in for the path of the private YAML file (`api-key: <value>`) the server class writes at
# start and deletes once SGLang is healthy; its contents never leave the container.
API_KEY_CONFIG_PLACEHOLDER = "<private api-key YAML, written at container start>"

# Exit status for an unusable stack file (argparse uses the same for bad arguments).
EXIT_INVALID = 2


def rendered(cfg: DeploymentConfig) -> dict:
    """The commands and environment of one deployment, secrets masked."""
    return {
        "launch": [*commands.launch_command(cfg), *commands.secret_config_args(API_KEY_CONFIG_PLACEHOLDER)],
        "compile": commands.compile_command(cfg),
        # The key is not here: prepare_sglang (serving/app.py) drops it from SGLang's environment.
        "env": commands.subprocess_env(commands.serve_env(cfg)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.render", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="stack name: reads Pulumi.<stack>.yaml at the repository root")
    source.add_argument("--file", help="path of a stack file to read instead")
    args = parser.parse_args(argv)

    redact: Callable[[str], str] = Redactor([])
    try:
        path = args.file or stack_file_path(args.stack)
        text = read_stack_file(path)
        redact = Redactor(plaintext_credentials(text))
        cfg = parse_deployment(text, source=str(path))
    except StackFileError as error:
        print(redact(f"error: {error}"), file=sys.stderr)
        return EXIT_INVALID
    except ValidationError as error:
        problems = format_errors(error)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        print(redact(f"error: {path}: invalid {DEPLOYMENT_CONFIG_KEY} ({count}):"), file=sys.stderr)
        for line in problems:
            # Named as the stack file and `pulumi preview` name it: glm-modal:deployment.<field>.
            print(redact(f"{DEPLOYMENT_CONFIG_KEY}.{line}"), file=sys.stderr)
        return EXIT_INVALID

    print(redact(json.dumps(rendered(cfg), indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
