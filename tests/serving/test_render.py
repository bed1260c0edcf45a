"""`python -m serving.render` and the stack files it reads, run as an operator would (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serving import commands
from serving.config import DeploymentConfig
from serving.render import API_KEY_CONFIG_PLACEHOLDER, EXIT_INVALID
from serving.stack_file import (
    DEPLOYMENT_CONFIG_KEY,
    DEPLOYMENT_KEY,
    PROJECT,
    StackFileError,
    load_stack_file,
    parse_deployment,
    stack_file_path,
)

REPO = Path(__file__).resolve().parents[2]

# Values that must never be printed: what a stack file's secrets could hold.
PLAINTEXT_API_KEY = "sk-plaintext-api-key-0123456789abcdef"
CIPHERTEXT = "v1:c2VjcmV0LWNpcGhlcnRleHQ=:AAAABBBBCCCC"


def render(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.render", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_stack(tmp_path: Path, deployment, **extra) -> Path:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump({"config": {DEPLOYMENT_CONFIG_KEY: deployment, **extra}}))
    return path


# --- the stack files ---


def test_project_file_names_the_project_the_venv_and_the_program():
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT == "glm-modal"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["main"] == "infra/"
    assert project["description"]
    assert (REPO / project["main"]).is_dir()


def test_staging_stack_is_a_small_dummy_weights_rehearsal():
    config = yaml.safe_load((REPO / "Pulumi.staging.yaml").read_text())["config"]
    assert config[f"{PROJECT}:modalEnvironment"] == "glm-staging"
    assert (config[f"{PROJECT}:protectVolumes"], config[f"{PROJECT}:smokeTest"]) == (False, True)
    assert config[f"{PROJECT}:requireApiKey"] is False
    cfg = load_stack_file(REPO / "Pulumi.staging.yaml")
    assert cfg.app_name == "glm-5.1-staging"
    assert cfg.model.weights == "dummy"
    assert (cfg.scaling.min_containers, cfg.scaling.max_containers, cfg.scaling.scaledown_window) == (0, 1, 300)
    names = [cfg.storage.weights_volume, cfg.storage.kernels_volume, cfg.secrets.hf_token, cfg.secrets.api_key]
    assert all(name.startswith("glm51-staging-") for name in names)
    assert len(set(names)) == 4
    # Nothing shared with production: a staging `pulumi destroy` cannot touch prod's objects.
    prod = DeploymentConfig()
    assert not set(names) & {prod.storage.weights_volume, prod.storage.kernels_volume, prod.secrets.api_key}
    assert cfg.app_name != prod.app_name


def test_prod_stack_is_the_recipe():
    config = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    assert config[f"{PROJECT}:modalEnvironment"] == "glm-prod"
    assert (config[f"{PROJECT}:protectVolumes"], config[f"{PROJECT}:smokeTest"]) == (True, False)
    assert config[f"{PROJECT}:requireApiKey"] is True
    assert load_stack_file(REPO / "Pulumi.prod.yaml") == DeploymentConfig()


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_stack_files_hold_secrets_only_encrypted_and_only_known_keys(stack):
    text = (REPO / f"Pulumi.{stack}.yaml").read_text()
    config = yaml.safe_load(text)["config"]
    secret_keys = {f"{PROJECT}:hfToken", f"{PROJECT}:apiKey"}
    # Secrets are set with `pulumi config set --secret` (the file says how), which stores them
    # encrypted as `{secure: ...}`; a plaintext value would be a leaked credential.
    for key in secret_keys & set(config):
        assert isinstance(config[key], dict) and set(config[key]) == {"secure"}, f"{key} is in plaintext"
    assert "secure" not in json.dumps({key: value for key, value in config.items() if key not in secret_keys})
    for key in secret_keys:
        assert f"pulumi config set --secret {key}" in text
    infra_keys = {"modalEnvironment", "protectVolumes", "smokeTest", "requireApiKey"}
    assert set(config) - secret_keys == {f"{PROJECT}:{key}" for key in {DEPLOYMENT_KEY, *infra_keys}}


def test_stack_file_path_is_next_to_the_project_file():
    assert stack_file_path("prod") == REPO / "Pulumi.prod.yaml"
    for bad in ("", "../prod", ".hidden"):
        with pytest.raises(StackFileError):
            stack_file_path(bad)


def test_stack_file_reader_explains_what_is_missing():
    with pytest.raises(StackFileError, match="not valid YAML"):
        parse_deployment("config: [unclosed")
    with pytest.raises(StackFileError, match="no `config:` mapping"):
        parse_deployment("just: text")
    with pytest.raises(StackFileError, match=f"no `{DEPLOYMENT_CONFIG_KEY}` key"):
        parse_deployment("config:\n  deployment: {}\n")  # not namespaced: Pulumi would not read it
    with pytest.raises(StackFileError, match="must be a YAML object"):
        parse_deployment(f"config:\n  {DEPLOYMENT_CONFIG_KEY}: glm-5.1\n")
    # Pulumi reads a string holding JSON as the object it holds; so does the reader.
    assert parse_deployment(f'config:\n  {DEPLOYMENT_CONFIG_KEY}: \'{{"app_name": "x"}}\'\n').app_name == "x"
    with pytest.raises(StackFileError, match=r"secret values at secrets\.api_key"):
        parse_deployment(
            f"config:\n  {DEPLOYMENT_CONFIG_KEY}:\n    secrets:\n      api_key:\n        secure: {CIPHERTEXT}\n"
        )
    with pytest.raises(StackFileError, match="is empty"):
        parse_deployment(f"config:\n  {DEPLOYMENT_CONFIG_KEY}:\n")
    assert parse_deployment(f"config:\n  {DEPLOYMENT_CONFIG_KEY}: {{}}\n") == DeploymentConfig()


# --- the render command ---


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_render_prints_what_the_containers_run(stack):
    result = render("--stack", stack)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    cfg = load_stack_file(REPO / f"Pulumi.{stack}.yaml")
    assert set(output) == {"launch", "compile", "env"}
    assert output["launch"] == [*commands.launch_command(cfg), "--config", API_KEY_CONFIG_PLACEHOLDER]
    assert output["compile"] == commands.compile_command(cfg)
    # What the SGLang process gets (serving/app.py's prepare_sglang and the lifecycle): never the key.
    assert output["env"] == {**commands.serve_env(cfg), "PYTHONUNBUFFERED": "1"}
    assert cfg.secrets.api_key_key not in output["env"]


def test_render_shows_staging_on_dummy_weights_and_prod_on_the_real_ones():
    staging = json.loads(render("--stack", "staging").stdout)
    prod = json.loads(render("--stack", "prod").stdout)
    for argv in (staging["launch"], staging["compile"]):
        assert argv[argv.index("--load-format") + 1] == "dummy"
    assert "--load-format" not in prod["launch"] and "--load-format" not in prod["compile"]


def test_render_reads_a_file_and_never_prints_secrets_next_to_it(tmp_path):
    # Secrets sit beside the deployment in a stack file: encrypted (normal) or, by mistake, plaintext.
    path = write_stack(
        tmp_path,
        {"app_name": "glm-render-test"},
        **{f"{PROJECT}:apiKey": PLAINTEXT_API_KEY, f"{PROJECT}:hfToken": {"secure": CIPHERTEXT}},
    )
    result = render("--file", str(path))
    assert result.returncode == 0, result.stderr
    assert PLAINTEXT_API_KEY not in result.stdout + result.stderr
    assert CIPHERTEXT not in result.stdout + result.stderr
    assert "--api-key" not in json.loads(result.stdout)["launch"]


def test_invalid_stack_file_lists_every_problem_with_its_field_and_exits_2(tmp_path):
    deployment = {
        "hardware": {"gpu_type": "H100"},
        "scaling": {"min_containers": 5, "max_containers": 2},
        "launch": {"memory": {"kv_cache_dtype": "fp8_e4m3"}},
        "storage": {"weights_mount": "relative/path"},
        "typo_section": {},
    }
    result = render("--file", str(write_stack(tmp_path, deployment)))
    assert result.returncode == EXIT_INVALID == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and "invalid glm-modal:deployment" in lines[0]
    paths = {line.split(": ", 1)[0] for line in lines[1:]}
    assert paths == {f"glm-modal:deployment.{path}" for path in
                     ("hardware.gpu_type", "scaling.min_containers", "storage.weights_mount", "typo_section")}


def test_cross_field_problem_is_reported_once_the_sections_are_valid(tmp_path):
    result = render("--file", str(write_stack(tmp_path, {"launch": {"memory": {"kv_cache_dtype": "fp8_e4m3"}}})))
    assert result.returncode == 2
    assert result.stderr.splitlines()[1].startswith(
        "glm-modal:deployment.launch.memory.kv_cache_dtype: 'fp8_e4m3' is an FP8 KV cache"
    )


def test_secret_values_inside_the_deployment_are_refused_without_being_printed(tmp_path):
    path = write_stack(tmp_path, {"keepalive": {"url": {"secure": CIPHERTEXT}}})
    result = render("--file", str(path))
    assert result.returncode == 2
    assert "keepalive.url" in result.stderr and CIPHERTEXT not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stack", "nosuchstack"], "Pulumi.nosuchstack.yaml: cannot read"),
        (["--file", "/nonexistent/Pulumi.x.yaml"], "cannot read"),
    ],
)
def test_missing_stack_file_exits_2(args, message):
    result = render(*args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_render_needs_exactly_one_source():
    assert render().returncode == 2
    assert render("--stack", "prod", "--file", "Pulumi.prod.yaml").returncode == 2
