"""The Modal definitions of serving/app.py, introspected without network and compared to the config.

Each case imports `serving.app` in a fresh Python process (the config is read once at import) with
every socket connection and DNS lookup made to fail, so an import that reached for the network would
fail the test. The probe reads what modal 1.6.4 records locally before anything is deployed:
- `Function.info()`: a FunctionInfo built at decoration time (GPU, CPU, memory, timeouts, volumes,
  secrets, concurrency); no RPC while the local copy exists;
- the closure of `_Function._load`, which holds what is only sent in FunctionCreate: the autoscaler
  settings (min/max containers, scaledown window), the schedule and the web-server method configs;
- the closure of each `_Image._load` in the image chain: the Dockerfile commands it will build
  (base image, pip pins, ENV) and the local Python sources mounted into it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from serving import commands, jobs
from serving.config import CONFIG_ENV_VAR, DeploymentConfig
from tests.serving.test_jobs import make_cfg, set_up

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, re, shlex, socket, sys


class NetworkBlocked(RuntimeError):
    pass


def refuse(*args, **kwargs):
    raise NetworkBlocked("network access while importing serving.app")


socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

import serving.app as module  # noqa: E402
from modal._image import LATEST_IMAGE_BUILDER_VERSION, _Image  # noqa: E402
from modal._utils.async_utils import synchronizer  # noqa: E402
from modal.mount import _Mount  # noqa: E402


def closure(function):
    cells = function.__closure__ or ()
    return dict(zip(function.__code__.co_freevars, (cell.cell_contents for cell in cells)))


def image_description(image):
    commands, sources = [], []

    def walk(layer):
        for dependency in layer._deps():
            if isinstance(dependency, _Image):
                walk(dependency)
            elif isinstance(dependency, _Mount):
                sources.extend(getattr(entry, "module_name", None) for entry in dependency._entries)
        dockerfile_function = closure(layer._load).get("dockerfile_function")
        if dockerfile_function is not None:
            commands.extend(dockerfile_function(LATEST_IMAGE_BUILDER_VERSION).commands)

    walk(image)
    env = {}
    for command in commands:
        if command.startswith("ENV "):
            key, _, value = command[len("ENV "):].partition("=")
            env[key] = shlex.split(value)[0]
    base = next(command.split()[1] for command in commands if command.startswith("FROM ") and command != "FROM base")
    return {"from": base, "commands": commands, "env": env, "local_python_sources": sources}


def secret_name(text):
    return re.fullmatch(r"modal\.Secret\.from_name\('([^']+)'\)", text).group(1)


def describe(function):
    info = synchronizer._translate_out(function).info()  # local FunctionInfo: no RPC before hydration
    load = closure(function._load)
    autoscaler = load["autoscaler_settings"]
    schedule = load["schedule"]
    web_servers = {
        name: {
            "port": method.webhook_config.web_server_port,
            "startup_timeout": method.webhook_config.web_server_startup_timeout,
            "requires_proxy_auth": method.webhook_config.requires_proxy_auth,
        }
        for name, method in (load["method_definitions"] or {}).items()
        if method.webhook_config.web_server_port
    }
    return {
        "gpus": [list(gpu) for gpu in info.gpus],
        "cpu": info.cpu,
        "memory_mib": info.memory_mib,
        "timeout": info.timeout,
        "startup_timeout": info.startup_timeout,
        "volumes": {path: mount.name for path, mount in info.volumes.items()},
        "secrets": [secret_name(text) for text in info.secrets],
        "max_concurrent_inputs": info.concurrency_info.max_inputs if info.concurrency_info else None,
        "autoscaler": {
            field: getattr(autoscaler, field) if autoscaler.HasField(field) else None
            for field in ("min_containers", "max_containers", "scaledown_window")
        },
        "schedule": {"cron": schedule.proto_message.cron.cron_string, "timezone": schedule.proto_message.cron.timezone}
        if schedule is not None
        else None,
        "web_servers": web_servers,
        "image": image_description(load["image"]),
    }


app = synchronizer._translate_in(module.app)
state = app._local_state
try:
    socket.create_connection(("127.0.0.1", 9))
    network_blocked = False
except NetworkBlocked:
    network_blocked = True

server_cls = state.classes["Server"]
print(json.dumps({
    "app_name": app.name,
    "network_blocked": network_blocked,
    "functions": {tag: describe(function) for tag, function in state.functions.items()},
    "classes": sorted(state.classes),
    "server_methods": {name: int(partial.flags) for name, partial in server_cls._get_partial_functions().items()},
    "server_is_service_function": server_cls._class_service_function is state.functions["Server.*"],
    "entrypoints": sorted(state.local_entrypoints),
    "lifecycle_module": getattr(getattr(module, "lifecycle", None), "__name__", None),
    "download_packages": list(module.DOWNLOAD_PACKAGES),
}))
"""

# A config that differs from the defaults wherever the app reads it.
CUSTOM = DeploymentConfig.model_validate(
    {
        "app_name": "glm-staging",
        "model": {"revision": "0123456789abcdef", "served_name": "glm-staging", "weights": "dummy"},
        "hardware": {"gpu_count": 4},
        "parallelism": {"tp": 4},
        "launch": {"port": 8080},
        "scaling": {"min_containers": 1, "max_containers": 2, "scaledown_window": 300, "max_concurrent_inputs": 12},
        "timeouts": {"server": 7200, "startup": 1500, "download": 3000, "compile": 1800, "verify": 120},
        "download": {"cpu": 2.0, "memory_mib": 16384},
        "storage": {
            "weights_volume": "glm-staging-weights",
            "kernels_volume": "glm-staging-kernels",
            "weights_mount": "/weights",
            "kernels_mount": "/kernels",
        },
        "secrets": {"hf_token": "hf-staging", "api_key": "glm-staging-api-key", "edge_token": "glm-staging-edge"},
        "keepalive": {
            "enabled": True,
            "schedule": "*/5 9-17 * * 1-5",
        },
        "edge": {"requires_proxy_auth": False},
    }
)
CONFIGS = {"defaults": None, "custom": CUSTOM}


def import_app(tmp_path: Path, config_json: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODAL_") and key != CONFIG_ENV_VAR}
    # No Modal credentials or profile: nothing could authenticate even if a connection got through.
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "no-modal.toml"))
    if config_json is not None:
        env[CONFIG_ENV_VAR] = config_json
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def imported(request, tmp_path_factory) -> tuple[DeploymentConfig, dict]:
    custom = CONFIGS[request.param]
    result = import_app(tmp_path_factory.mktemp(request.param), custom.to_json() if custom else None)
    assert result.returncode == 0, result.stderr
    return custom or DeploymentConfig(), json.loads(result.stdout.splitlines()[-1])


def test_import_is_offline_and_defines_the_pipeline_and_server(imported):
    cfg, probe = imported

    assert probe["network_blocked"] is True
    assert probe["app_name"] == cfg.app_name
    setup_functions = {"download_model", "compile_deepgemm", "verify_setup", "Server.*"}
    keepalive = {"keep_warm"} if cfg.keepalive.enabled else set()
    assert set(probe["functions"]) == setup_functions | keepalive
    assert probe["classes"] == ["Server"] and probe["server_is_service_function"] is True
    assert probe["entrypoints"] == ["main"]
    assert probe["lifecycle_module"] == "serving.lifecycle"


def test_download_function_matches_the_config(imported):
    cfg, probe = imported
    download = probe["functions"]["download_model"]

    assert download["gpus"] == []
    assert download["cpu"] == cfg.download.cpu
    assert download["memory_mib"] == cfg.download.memory_mib
    assert download["timeout"] == cfg.timeouts.download
    assert download["volumes"] == {cfg.storage.weights_mount: cfg.storage.weights_volume}
    assert download["secrets"] == [cfg.secrets.hf_token]


def test_compile_and_verify_functions_match_the_config(imported):
    cfg, probe = imported
    both_volumes = {
        cfg.storage.weights_mount: cfg.storage.weights_volume,
        cfg.storage.kernels_mount: cfg.storage.kernels_volume,
    }
    compile_fn, verify_fn = probe["functions"]["compile_deepgemm"], probe["functions"]["verify_setup"]

    assert compile_fn["gpus"] == [[cfg.hardware.gpu_type, cfg.hardware.gpu_count]]
    assert compile_fn["timeout"] == cfg.timeouts.compile
    assert compile_fn["volumes"] == both_volumes
    assert compile_fn["secrets"] == []
    assert compile_fn["image"]["from"] == cfg.sglang.image

    assert verify_fn["gpus"] == []
    assert verify_fn["timeout"] == cfg.timeouts.verify
    assert verify_fn["volumes"] == both_volumes


def test_server_matches_the_config(imported):
    cfg, probe = imported
    server = probe["functions"]["Server.*"]

    assert server["gpus"] == [[cfg.hardware.gpu_type, cfg.hardware.gpu_count]]
    assert cfg.hardware.modal_gpu == f"{cfg.hardware.gpu_type}:{cfg.hardware.gpu_count}"
    assert server["volumes"] == {
        cfg.storage.weights_mount: cfg.storage.weights_volume,
        cfg.storage.kernels_mount: cfg.storage.kernels_volume,
    }
    assert server["secrets"] == [cfg.secrets.api_key]
    assert server["timeout"] == cfg.timeouts.server
    assert server["startup_timeout"] == cfg.timeouts.startup
    assert server["autoscaler"] == {
        "min_containers": cfg.scaling.min_containers,
        "max_containers": cfg.scaling.max_containers,
        "scaledown_window": cfg.scaling.scaledown_window,
    }
    assert server["max_concurrent_inputs"] == cfg.scaling.max_concurrent_inputs
    assert server["web_servers"] == {
        "serve": {
            "port": cfg.launch.port,
            "startup_timeout": cfg.timeouts.startup,
            "requires_proxy_auth": cfg.edge.requires_proxy_auth,
        }
    }
    assert server["image"]["from"] == cfg.sglang.image


def test_server_starts_in_enter_and_stops_in_exit(imported):
    from modal._partial_function import _PartialFunctionFlags as Flags

    _, probe = imported
    methods = probe["server_methods"]

    assert methods["start"] & Flags.ENTER_POST_SNAPSHOT
    assert methods["stop"] & Flags.EXIT
    assert methods["serve"] & Flags.WEB_INTERFACE


def test_keep_alive_cron_only_when_enabled(imported):
    cfg, probe = imported
    if not cfg.keepalive.enabled:
        assert "keep_warm" not in probe["functions"]
        return
    keep_warm = probe["functions"]["keep_warm"]
    assert keep_warm["schedule"] == {"cron": cfg.keepalive.schedule, "timezone": "UTC"}
    # The edge token only where the edge wants one.
    edge = [cfg.secrets.edge_token] if cfg.edge.requires_proxy_auth else []
    assert keep_warm["gpus"] == [] and keep_warm["secrets"] == [cfg.secrets.api_key, *edge]


def test_every_image_carries_the_config_and_our_package(imported):
    cfg, probe = imported

    for tag, function in probe["functions"].items():
        image = function["image"]
        # The container parses exactly this JSON at import: the same config, never re-typed.
        assert DeploymentConfig.model_validate_json(image["env"][CONFIG_ENV_VAR]) == cfg, tag
        assert image["env"][CONFIG_ENV_VAR] == cfg.to_json(), tag
        assert image["local_python_sources"] == ["serving"], tag


def test_sglang_image_is_the_pinned_release_with_the_serving_environment(imported):
    cfg, probe = imported
    image = probe["functions"]["Server.*"]["image"]

    assert image["from"] == cfg.sglang.image and not image["from"].endswith(":latest")
    for key, value in commands.image_env(cfg).items():
        assert image["env"][key] == value
    assert image["env"][commands.SGLANG_DG_CACHE_DIR] == cfg.storage.kernels_mount


def test_download_image_pins_the_versions_the_project_pins(imported):
    _, probe = imported
    image = probe["functions"]["download_model"]["image"]
    project_pins = dict(
        _split_pin(requirement)
        for requirement in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )

    assert image["from"].startswith("python:3.11")
    pins = dict(_split_pin(package) for package in probe["download_packages"])
    assert set(pins) == {"huggingface-hub", "hf-xet", "pydantic", "tenacity"}
    for package, version in pins.items():
        assert re.fullmatch(r"\d+(\.\d+)+", version), package
        if package in project_pins:
            assert version == project_pins[package], package
    assert any(f"huggingface-hub=={pins['huggingface-hub']}" in command for command in image["commands"])
    assert image["env"][commands.HF_XET_HIGH_PERFORMANCE] == "1"


def _split_pin(requirement: str) -> tuple[str, str]:
    name, _, version = requirement.partition("==")
    return name.strip().lower().replace("_", "-"), version.strip()


def test_an_invalid_config_fails_the_import_naming_the_field(tmp_path):
    invalid = DeploymentConfig().model_dump()
    invalid["parallelism"]["tp"] = 4  # 8 GPUs

    result = import_app(tmp_path, json.dumps(invalid))

    assert result.returncode != 0
    assert "parallelism.tp" in result.stderr


# --- the server's start-up checks (in this process: nothing here touches Modal) -----------------


def test_server_start_refuses_volumes_that_are_not_ready(tmp_path):
    from serving import app

    with pytest.raises(jobs.SetupIncomplete) as failure:
        app.prepare_sglang(make_cfg(tmp_path), {"API_KEY": "not-a-real-key"}, startup_timeout=60)

    assert "serving/app.py::download_model" in str(failure.value)
    assert "serving/app.py::compile_deepgemm" in str(failure.value)


def test_server_start_requires_the_api_key_and_names_its_secret(tmp_path):
    from serving import app

    cfg = make_cfg(tmp_path)
    set_up(cfg)

    # `API_KEY=-`: the Modal CLI asks for the value, so the fix keeps the key out of argv and shell history.
    fix = "`modal secret create glm51-api-key API_KEY=-`"
    with pytest.raises(RuntimeError, match=f"secret 'glm51-api-key' has no API_KEY: {fix}"):
        app.prepare_sglang(cfg, {}, startup_timeout=60)


def test_server_start_describes_sglang_on_the_configured_port(tmp_path):
    from serving import app, lifecycle

    cfg = make_cfg(tmp_path, launch={"port": 8123})
    set_up(cfg)

    sglang = app.prepare_sglang(cfg, {"API_KEY": "not-a-real-key"}, startup_timeout=60)

    assert isinstance(sglang, lifecycle.SGLangServer)
    assert sglang.base_url == "http://127.0.0.1:8123" and sglang.pid is None  # described, not started


def test_sglang_gets_the_api_key_only_through_its_config_file(tmp_path):
    from serving import app

    cfg = make_cfg(tmp_path)
    set_up(cfg)

    sglang = app.prepare_sglang(cfg, {"API_KEY": "not-a-real-key", "PATH": "/usr/bin"}, startup_timeout=60)

    # Not in SGLang's environment (readable in /proc/<pid>/environ), nor in its argv.
    assert "API_KEY" not in sglang._env and "not-a-real-key" not in sglang._env.values()
    assert sglang._env["HF_HUB_OFFLINE"] == "1" and sglang._env["PATH"] == "/usr/bin"
