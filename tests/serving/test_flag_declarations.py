"""A launch flag is declared once, as a field of `launch` in serving/config.py: the argv, the
compile's trigger (`kernel_inputs()`) and the verify job's view of the config follow from it.

The example is a real flag of the pinned release that this deployment does not set:
`--chunked-prefill-size`, whose value bounds the prefill GEMM shapes DeepGEMM compiles for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import create_model

from serving import commands
from serving.config import SHAPES_KERNELS, DeploymentConfig, Launch, Memory, PositiveInt
from serving.render import rendered
from tests.serving.sglang_parser import COMPILE_MODULE, LAUNCH_MODULE, module_args, parse_compile, parse_launch

REPO = Path(__file__).resolve().parents[2]

# `python -m serving.render --stack <stack>` as it printed while the argv was still written out flag
# by flag in serving/commands.py; deriving it from the declarations must print the same bytes.
RENDERED = Path(__file__).parent / "rendered"


class MemoryWithKernelFlag(Memory):
    chunked_prefill_size: Annotated[PositiveInt, SHAPES_KERNELS] = 8192  # the one line of a new flag


class MemoryWithFlag(Memory):
    chunked_prefill_size: PositiveInt = 8192  # the same flag, not marked as shaping kernels


def deployment_with(memory: type[Memory], **values: int) -> DeploymentConfig:
    """The production defaults with `memory` as the launch.memory section (and `values` in it)."""
    launch = create_model("Launch", __base__=Launch, memory=(memory, memory()))
    config = create_model("DeploymentConfig", __base__=DeploymentConfig, launch=(launch, launch()))
    return config.model_validate({"launch": {"memory": values}})


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_derived_commands_render_byte_for_byte_what_the_written_out_ones_did(stack):
    result = subprocess.run(
        [sys.executable, "-m", "serving.render", "--stack", stack],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == (RENDERED / f"{stack}.json").read_text()


@pytest.mark.parametrize("memory", [MemoryWithKernelFlag, MemoryWithFlag])
def test_a_flag_declared_in_one_line_reaches_both_commands_and_the_pinned_parser_takes_it(memory):
    cfg = deployment_with(memory)
    launch = rendered(cfg)["launch"]
    assert launch[launch.index("--chunked-prefill-size") + 1] == "8192"
    assert parse_launch(module_args(commands.launch_command(cfg), LAUNCH_MODULE)).chunked_prefill_size == 8192
    compiled = parse_compile(module_args(commands.compile_command(cfg), COMPILE_MODULE)).server_args
    assert compiled.chunked_prefill_size == 8192
    # Nothing else moved: the flag follows the other memory flags.
    args = commands.server_args(cfg)
    at = args.index("--chunked-prefill-size")
    assert args[:at] + args[at + 2 :] == commands.server_args(DeploymentConfig())
    assert args[at - 2 : at] == ["--max-total-tokens", "65536"]


def test_a_flag_marked_as_shaping_kernels_is_a_kernel_input_and_the_verify_keeps_it():
    cfg = deployment_with(MemoryWithKernelFlag, chunked_prefill_size=4096)
    assert cfg.kernel_inputs() == {**DeploymentConfig().kernel_inputs(), "chunked_prefill_size": 4096}
    assert cfg.kernel_fingerprint() != deployment_with(MemoryWithKernelFlag).kernel_fingerprint()
    assert cfg.launch.kernel_flags_only().memory.chunked_prefill_size == 4096


def test_an_unmarked_flag_is_no_kernel_input_and_the_verify_resets_it():
    cfg = deployment_with(MemoryWithFlag, chunked_prefill_size=4096)
    assert cfg.kernel_inputs() == DeploymentConfig().kernel_inputs()
    assert cfg.kernel_fingerprint() == DeploymentConfig().kernel_fingerprint()
    assert cfg.launch.kernel_flags_only().memory.chunked_prefill_size == 8192


def test_the_marks_give_the_kernel_inputs_the_compile_markers_on_the_volumes_were_written_with():
    # A marker names its fingerprint: a differently shaped kernel_inputs() would make every stack
    # compile again. These are the marked settings: two sections whole, and one flag.
    launch = DeploymentConfig().launch
    assert launch.kernel_flags() == {
        "backends": launch.backends.model_dump(),
        "speculative": launch.speculative.model_dump(),
        "kv_cache_dtype": "bfloat16",
    }
