"""The launch and compile commands, checked by the pinned SGLang release's own code on CPU.

SGLang 0.5.23 is installed without its dependencies (scripts/setup); its argument parser, the
`--config` merge, part of its post-parse resolution and its environment registry import on CPU.
Every value we render is read back from what SGLang parsed, so a renamed flag, a changed choice
list, a deprecated spelling or a dropped environment variable fails here instead of at a cold
start on eight B200s.
"""

from __future__ import annotations

import ast
import importlib.metadata
import logging
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import sglang
from sglang.srt import environ
from sglang.srt.arg_groups import serving_hook
from sglang.srt.arg_groups.arg_utils import record_fields
from sglang.srt.arg_groups.argparse_actions import DeprecatedStoreConstAction, DeprecatedStoreTrueAction
from sglang.srt.arg_groups.resolution_hooks import run_hook
from sglang.srt.arg_groups.speculative_hook import _resolve_speculative_algorithm_alias

from serving import commands
from serving.commands import secret_config_args
from serving.config import (
    Backends,
    DeploymentConfig,
    DsaBackend,
    Memory,
    MoeRunnerBackend,
    Parsers,
    Speculative,
)
from serving.lifecycle import write_secret_config
from serving.render import API_KEY_CONFIG_PLACEHOLDER, rendered
from serving.stack_file import load_stack_file
from serving.versions import SGLANG_VERSION
from tests.serving import sglang_parser
from tests.serving.sglang_parser import COMPILE_MODULE, LAUNCH_MODULE, module_args, parse_compile, parse_launch

REPO = Path(__file__).resolve().parents[2]


def variant(**sections) -> DeploymentConfig:
    """The production defaults with some sections replaced (nested dicts merge)."""
    data = DeploymentConfig().model_dump()
    _merge(data, sections)
    return DeploymentConfig.model_validate(data)


def _merge(into: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


VARIANTS = {
    "production": DeploymentConfig(),
    "dummy-weights": variant(model={"weights": "dummy"}),
    # Everything that can move away from the defaults, including speculation off (which allows an
    # FP8 KV cache) and fusion forced off.
    "no-speculation": variant(
        model={"repo": "zai-org/GLM-5.1-FP8", "revision": "0123abcd", "served_name": "glm-test"},
        hardware={"gpu_count": 4},
        parallelism={"tp": 4, "ep": 2},
        launch={
            "port": 9000,
            "backends": {
                "dsa_decode_backend": "flashmla_sparse",
                "dsa_prefill_backend": "flashmla_auto",
                "moe_runner_backend": "deep_gemm",
                "flashinfer_allreduce_fusion_backend": "disabled",
            },
            "speculative": {"algorithm": None},
            "parsers": {"reasoning_parser": "glm45", "tool_call_parser": "glm"},
            "memory": {
                "kv_cache_dtype": "fp8_e4m3",
                "mem_fraction_static": 0.8,
                "max_running_requests": 16,
                "max_prefill_tokens": 8192,
                "max_total_tokens": 16384,
            },
            "stability": {"trust_remote_code": False, "watchdog_timeout": 600, "enable_metrics": False},
        },
        timeouts={"compile": 1800},
        storage={"weights_mount": "/weights"},
    ),
    "nextn-mtp": variant(launch={"speculative": {"algorithm": "NEXTN", "num_steps": 2, "num_draft_tokens": 3}}),
}


def expected_server_fields(cfg: DeploymentConfig) -> dict:
    """What SGLang must end up with, derived from the config alone (not from commands.py)."""
    launch = cfg.launch
    spec = launch.speculative
    fusion = launch.backends.flashinfer_allreduce_fusion_backend
    return {
        "model_path": f"{cfg.storage.weights_mount}/{cfg.model.repo.split('/')[1]}",
        "served_model_name": cfg.model.served_name,
        "tp_size": cfg.parallelism.tp,
        "ep_size": cfg.parallelism.ep,
        "trust_remote_code": launch.stability.trust_remote_code,
        "load_format": "dummy" if cfg.model.weights == "dummy" else "auto",
        "attention_backend": launch.backends.attention_backend,
        "dsa_decode_backend": launch.backends.dsa_decode_backend,
        "dsa_prefill_backend": launch.backends.dsa_prefill_backend,
        "moe_runner_backend": launch.backends.moe_runner_backend,
        "flashinfer_allreduce_fusion_backend": None if fusion == "disabled" else fusion,
        "enforce_disable_flashinfer_allreduce_fusion": fusion == "disabled",
        # The deprecated switch is never what turns fusion on.
        "enable_flashinfer_allreduce_fusion": False,
        "speculative_algorithm": spec.algorithm,
        "speculative_num_steps": spec.num_steps if spec.algorithm else None,
        "speculative_eagle_topk": spec.eagle_topk if spec.algorithm else None,
        "speculative_num_draft_tokens": spec.num_draft_tokens if spec.algorithm else None,
        "reasoning_parser": launch.parsers.reasoning_parser,
        "tool_call_parser": launch.parsers.tool_call_parser,
        "kv_cache_dtype": launch.memory.kv_cache_dtype,
        "mem_fraction_static": launch.memory.mem_fraction_static,
        "max_running_requests": launch.memory.max_running_requests,
        "max_prefill_tokens": launch.memory.max_prefill_tokens,
        "max_total_tokens": launch.memory.max_total_tokens,
        "enable_metrics": launch.stability.enable_metrics,
        # Never on the command line: the API key arrives through the --config file.
        "api_key": None,
    }


def assert_fields(parsed, expected: dict) -> None:
    actual = {name: getattr(parsed, name) for name in expected}
    assert actual == expected


@pytest.fixture(params=sorted(VARIANTS))
def cfg(request) -> DeploymentConfig:
    return VARIANTS[request.param]


# --- one pinned release everywhere ---


def test_the_installed_sglang_is_the_pinned_release_and_the_image_tag_names_it():
    cfg = DeploymentConfig()
    assert importlib.metadata.version("sglang") == SGLANG_VERSION == cfg.sglang.version
    assert sglang.__version__ == SGLANG_VERSION
    tag = cfg.sglang.image.rsplit(":", 1)[1]
    assert tag.startswith(f"v{SGLANG_VERSION}-") and "latest" not in cfg.sglang.image


def test_the_stack_files_serve_the_pinned_release():
    for stack in ("staging", "prod"):
        release = load_stack_file(REPO / f"Pulumi.{stack}.yaml").sglang
        assert release.version == SGLANG_VERSION and f":v{SGLANG_VERSION}-" in release.image


# --- the launch command ---


def test_launch_command_round_trips_through_the_pinned_parser(cfg):
    parsed = parse_launch(module_args(commands.launch_command(cfg), LAUNCH_MODULE))
    assert_fields(parsed, expected_server_fields(cfg))
    assert parsed.watchdog_timeout == cfg.launch.stability.watchdog_timeout
    assert (parsed.host, parsed.port) == ("0.0.0.0", cfg.launch.port)


def test_production_launch_reads_as_the_recipe_in_0_5_23_words():
    parsed = parse_launch(module_args(commands.launch_command(DeploymentConfig()), LAUNCH_MODULE))
    assert (parsed.model_path, parsed.served_model_name) == ("/model-cache/GLM-5.1-FP8", "glm-5.1")
    assert (parsed.tp_size, parsed.ep_size, parsed.watchdog_timeout, parsed.trust_remote_code) == (8, 1, 1200, True)
    assert (parsed.attention_backend, parsed.dsa_decode_backend, parsed.dsa_prefill_backend) == (
        "dsa",
        "trtllm",
        "trtllm",
    )
    assert (parsed.moe_runner_backend, parsed.flashinfer_allreduce_fusion_backend) == ("flashinfer_trtllm", "auto")
    assert (
        parsed.speculative_algorithm,
        parsed.speculative_num_steps,
        parsed.speculative_eagle_topk,
        parsed.speculative_num_draft_tokens,
    ) == ("EAGLE", 3, 1, 4)
    assert (parsed.reasoning_parser, parsed.tool_call_parser) == ("glm45", "glm47")
    # "auto" would become fp8_e4m3 for DSA on sm100 in 0.5.23: BF16 is asked for by name.
    assert parsed.kv_cache_dtype == "bfloat16"
    assert (parsed.mem_fraction_static, parsed.max_running_requests) == (0.88, 48)
    assert (parsed.max_prefill_tokens, parsed.max_total_tokens) == (32768, 65536)
    assert parsed.enable_metrics is True
    assert parsed.load_format == "auto"


def test_dummy_weights_reach_both_commands():
    cfg = VARIANTS["dummy-weights"]
    assert parse_launch(module_args(commands.launch_command(cfg), LAUNCH_MODULE)).load_format == "dummy"
    assert parse_compile(module_args(commands.compile_command(cfg), COMPILE_MODULE)).server_args.load_format == "dummy"


def test_speculation_off_drops_every_speculative_flag():
    argv = commands.launch_command(VARIANTS["no-speculation"])
    assert not [arg for arg in argv if arg.startswith("--speculative")]
    assert parse_launch(module_args(argv, LAUNCH_MODULE)).speculative_algorithm is None


def test_every_flag_is_spelled_exactly_and_none_is_deprecated(cfg):
    # argparse accepts unambiguous abbreviations ("--tp" for "--tp-size"); a flag must be named in
    # full, so an abbreviation that becomes ambiguous in a later release cannot break the launch.
    parser = sglang_parser.server_parser()
    for flag in [arg for arg in commands.server_args(cfg) if arg.startswith("--")]:
        action = parser._option_string_actions.get(flag)
        assert action is not None, f"{flag} is not a flag of SGLang {SGLANG_VERSION}"
        assert not isinstance(action, DeprecatedStoreTrueAction | DeprecatedStoreConstAction), flag
        assert "deprecated" not in (action.help or "").lower(), f"{flag}: {action.help}"


def test_the_recipes_0_5_10_spellings_are_gone_from_our_commands_and_from_the_release(capsys):
    for cfg in VARIANTS.values():
        for argv in (commands.launch_command(cfg), commands.compile_command(cfg)):
            assert not {"--nsa-decode-backend", "--nsa-prefill-backend", "--enable-flashinfer-allreduce-fusion"} & set(
                argv
            )
            assert "nsa" not in argv
    # 0.5.23 no longer knows the recipe's spellings at all: they would fail the launch.
    parser = sglang_parser.server_parser()
    for gone in ("--nsa-decode-backend", "--nsa-prefill-backend"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--model-path", "/m", gone, "trtllm"])
    capsys.readouterr()


def test_sglang_deprecation_handling_has_nothing_to_say_about_our_launch(cfg):
    # SGLang's own post-parse step for deprecated arguments (renames, aliases, the old fusion switch)
    # runs on CPU: on our arguments it must neither warn nor change a value we set.
    parsed = parse_launch(module_args(commands.launch_command(cfg), LAUNCH_MODULE))
    parsed._raw_input = {field.name: getattr(parsed, field.name) for field in record_fields(type(parsed))}
    parsed._resolved_overrides = []
    warnings = _Collect()
    hook_logger = logging.getLogger(serving_hook.__name__)
    hook_logger.addHandler(warnings)
    try:
        run_hook(serving_hook.handle_deprecated_args, parsed)
    finally:
        hook_logger.removeHandler(warnings)
    assert warnings.messages == []
    expected = expected_server_fields(cfg)
    changed = {
        field: value
        for _source, declared in parsed._resolved_overrides
        for field, value in declared.items()
        if field in expected and value != expected[field]
    }
    assert changed == {}


def literal_values(annotation) -> set[str]:
    """The strings a Literal (possibly inside a union with None) allows."""
    values = set()
    for arg in typing.get_args(annotation):
        values |= {arg} if isinstance(arg, str) else literal_values(arg)
    return values


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_config_choices_are_choices_of_the_pinned_parser():
    # The config restricts backends and dtypes so a typo fails at `pulumi preview`; every value it
    # allows must still be one SGLang accepts.
    parser = sglang_parser.server_parser()

    def choices(flag):
        return set(parser._option_string_actions[flag].choices)

    assert literal_values(DsaBackend) <= choices("--dsa-decode-backend") & choices("--dsa-prefill-backend")
    assert literal_values(MoeRunnerBackend) <= choices("--moe-runner-backend")
    assert literal_values(Memory.model_fields["kv_cache_dtype"].annotation) <= choices("--kv-cache-dtype")
    fusion = literal_values(Backends.model_fields["flashinfer_allreduce_fusion_backend"].annotation) - {"disabled"}
    assert fusion <= choices("--flashinfer-allreduce-fusion-backend")
    assert {"dsa", "dummy", "auto"} <= choices("--attention-backend") | choices("--load-format")
    parsers = Parsers.model_fields
    assert literal_values(parsers["reasoning_parser"].annotation) <= choices("--reasoning-parser")
    assert literal_values(parsers["tool_call_parser"].annotation) <= choices("--tool-call-parser")


def test_every_speculative_algorithm_we_allow_drafts_with_the_checkpoints_own_mtp_head():
    # With no separate draft model, the pinned resolver maps each allowed name to EAGLE (which then
    # takes the MTP layer from --model-path for GlmMoeDsaForCausalLM).
    allowed = literal_values(Speculative.model_fields["algorithm"].annotation)
    assert allowed == {"EAGLE", "NEXTN"}
    for name in allowed:
        assert _resolve_speculative_algorithm_alias(name, None) == "EAGLE"


# --- the compile command ---


def test_compile_command_runs_through_the_pinned_compile_script(cfg):
    run = parse_compile(module_args(commands.compile_command(cfg), COMPILE_MODULE))
    assert run.compile_args.timeout == cfg.timeouts.compile
    assert_fields(run.server_args, expected_server_fields(cfg))
    # What compile_deep_gemm itself changes for the compile server.
    assert run.server_args.watchdog_timeout == cfg.timeouts.compile
    assert run.server_args.warmups == "compile-deep-gemm"
    assert run.server_args.enable_torch_compile is False
    assert {phase: c["backend"] for phase, c in run.server_args.cuda_graph_config.items()} == {
        "decode": "disabled",
        "prefill": "disabled",
    }


def test_compile_asks_for_the_kernels_the_server_will_ask_for(cfg):
    # Same server arguments: every ServerArgs field equal to the launch's, except the ones the compile
    # script sets itself and where the server listens.
    launch = parse_launch(module_args(commands.launch_command(cfg), LAUNCH_MODULE))
    compile_ = parse_compile(module_args(commands.compile_command(cfg), COMPILE_MODULE)).server_args
    differing = {
        field.name
        for field in record_fields(type(launch))
        if getattr(launch, field.name) != getattr(compile_, field.name)
    }
    assert differing == {"host", "port", "watchdog_timeout", "warmups", "cuda_graph_config"}


def test_compile_script_cannot_be_imported_on_cpu_so_the_checks_run_its_code_from_the_file():
    # The reason sglang_parser runs the file's code instead of importing the module; if this starts
    # passing an import, switch sglang_parser.parse_compile to the real module.
    probe = subprocess.run(
        [sys.executable, "-c", f"import {COMPILE_MODULE}"], capture_output=True, text=True, timeout=120
    )
    assert probe.returncode != 0
    assert re.search(r"ModuleNotFoundError: No module named '(transformers|torchvision)'", probe.stderr)


def test_the_compile_script_is_the_installed_release_file():
    path = sglang_parser.compile_module_file()
    assert Path(sglang.__file__).parent in path.parents
    source = path.read_text()
    assert "ServerArgs.add_cli_args(parser)" in source and "CompileArgs.add_cli_args(parser)" in source


# --- the API key: only through a private --config YAML ---


def test_neither_command_carries_an_api_key_or_a_config_file(cfg):
    for argv in (commands.launch_command(cfg), commands.compile_command(cfg)):
        assert not [arg for arg in argv if arg.startswith(("--api-key", "--admin-api-key", "--config"))]


def test_a_config_yaml_with_api_key_sets_it_through_the_launch_parser(tmp_path):
    config_file = tmp_path / "secret.yaml"
    config_file.write_text("api-key: s3cret-from-yaml\n")
    cfg = DeploymentConfig()
    args = module_args(commands.launch_command(cfg), LAUNCH_MODULE)
    parsed = parse_launch([*args, "--config", str(config_file)])
    assert parsed.api_key == "s3cret-from-yaml"
    # The file only adds the key: everything the command line says still holds.
    assert_fields(parsed, {**expected_server_fields(cfg), "api_key": "s3cret-from-yaml"})
    # 0.5.23 records the *merged* argv as its launch_command (served by /server_info, logged at
    # start), so the key is in it in plaintext: SGLang's log output must be redacted.
    assert "s3cret-from-yaml" in parsed.launch_command


@pytest.mark.parametrize(
    "api_key",
    [
        "0123456789abcdef0123456789abcdef",
        "yes",  # YAML 1.1 boolean if written unquoted
        "null",
        "~",
        "0x1F",  # YAML integer if written unquoted
        "1_000",
        "1e3",
        "-5",  # looks like a negative number: argparse still takes it as the value
        "key with spaces # and a hash",
        "ünïcødé-🔑",
        "a: b",
    ],
)
def test_the_servers_secret_config_file_gives_sglang_exactly_the_key(tmp_path, api_key):
    # The file serving.lifecycle writes at container start, read by the pinned release.
    config_file = write_secret_config(api_key, tmp_path)
    args = module_args(commands.launch_command(DeploymentConfig()), LAUNCH_MODULE)
    parsed = parse_launch([*args, *secret_config_args(config_file)])
    assert parsed.api_key == api_key


def test_config_must_be_a_separate_argument_or_sglang_ignores_the_file(tmp_path):
    # prepare_server_args only merges when the literal "--config" is an argument of its own.
    config_file = write_secret_config("k" * 32, tmp_path)
    assert secret_config_args(config_file) == ["--config", str(config_file)]
    args = module_args(commands.launch_command(DeploymentConfig()), LAUNCH_MODULE)
    assert parse_launch([*args, f"--config={config_file}"]).api_key is None


def test_rendered_launch_with_a_real_config_file_is_what_sglang_serves(tmp_path):
    cfg = load_stack_file(REPO / "Pulumi.staging.yaml")
    launch = rendered(cfg)["launch"]
    config_file = write_secret_config("k" * 32, tmp_path)
    argv = [str(config_file) if arg == API_KEY_CONFIG_PLACEHOLDER else arg for arg in launch]
    parsed = parse_launch(module_args(argv, LAUNCH_MODULE))
    assert_fields(parsed, {**expected_server_fields(cfg), "api_key": "k" * 32})


# --- environment variables ---


def _registry() -> dict[str, environ.EnvField]:
    return {name: field for name, field in vars(environ.Envs).items() if isinstance(field, environ.EnvField)}


def test_every_sglang_variable_we_set_exists_in_the_release_and_parses(cfg):
    registry = _registry()
    ours = {
        name: value
        for name, value in {**commands.image_env(cfg), **commands.serve_env(cfg)}.items()
        if name.startswith(("SGLANG_", "SGL_"))
    }
    assert ours, "expected at least SGLANG_DG_CACHE_DIR"
    for name, value in ours.items():
        assert name in registry, f"{name} is not an environment variable of SGLang {SGLANG_VERSION}"
        assert name not in environ._DEPRECATED_ENVS, f"{name} is deprecated in SGLang {SGLANG_VERSION}"
        with registry[name].override(value):
            assert str(registry[name].get()) == value


def test_deep_gemm_cache_is_the_kernels_volume(cfg):
    assert commands.image_env(cfg)["SGLANG_DG_CACHE_DIR"] == cfg.storage.kernels_mount
    assert commands.serve_env(cfg)["HF_HUB_OFFLINE"] == "1"


def test_every_sglang_variable_named_anywhere_in_serving_exists_in_the_release():
    registry = _registry()
    named = set()
    for path in (REPO / "serving").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named |= {(path.name, name) for name in re.findall(r"\bSGL(?:ANG)?_[A-Z0-9_]+\b", node.value)}
    unknown = sorted((file, name) for file, name in named if name not in registry)
    assert unknown == []
    assert ("commands.py", "SGLANG_DG_CACHE_DIR") in named


def test_the_removed_spec_v2_switch_is_nowhere_in_our_deployment():
    removed = "SGLANG_ENABLE_SPEC_V2"
    assert removed not in _registry()  # gone in 0.5.23: setting it would do nothing
    files = [*(REPO / "serving").rglob("*.py"), *REPO.glob("Pulumi*.yaml")]
    assert [str(path) for path in files if removed in path.read_text()] == []
    for cfg in VARIANTS.values():
        assert removed not in {**commands.image_env(cfg), **commands.serve_env(cfg)}
