"""What each one-off setup job needs of the deployment config, and nothing else.

A job imports the serving module with a config (in `module_env`), so the config it gets is stored
with the job. If every job got the whole config, a scaling knob or a warmup timeout would show up in
`pulumi preview` as a change of all three jobs (recorded, not re-run, but alarming to read). So each
job gets the deployment config with the settings it never reads reset to their defaults:

- all jobs: scaling, keep-alive and the serving timeouts (server, startup, warmup, shutdown). This
  also keeps the ephemeral app a job runs in from starting warm `min_containers` of the 8-GPU
  server, or a keep-alive schedule, while the job runs.
- download and verify also lose the launch flags and served name that do not shape kernels: they
  never start SGLang. The compile keeps them all, because it must compile with exactly the serving
  arguments (serving/commands.py).

Whether a job RUNS is decided by its triggers alone (`DeploymentConfig.weights_inputs()` /
`kernel_inputs()`), never by this view.
"""

from __future__ import annotations

from typing import Literal

from serving.config import CONFIG_ENV_VAR, DeploymentConfig, KeepAlive, Launch, Memory, Scaling, Timeouts

JobName = Literal["download", "compile", "verify"]


def job_config(cfg: DeploymentConfig, job: JobName) -> DeploymentConfig:
    """`cfg` as the job's container sees it (validated again, so it is a config that can run)."""
    data = cfg.model_dump()
    data["scaling"] = Scaling().model_dump()
    data["keepalive"] = KeepAlive().model_dump()
    data["timeouts"] = Timeouts(
        download=cfg.timeouts.download, compile=cfg.timeouts.compile, verify=cfg.timeouts.verify
    ).model_dump()
    if job != "compile":
        launch = cfg.launch
        data["launch"] = Launch(
            backends=launch.backends,
            speculative=launch.speculative,
            memory=Memory(kv_cache_dtype=launch.memory.kv_cache_dtype),
        ).model_dump()
        data["model"]["served_name"] = DeploymentConfig().model.served_name
    view = DeploymentConfig.model_validate(data)
    # The view must never change what the job produces or checks.
    assert view.weights_inputs() == cfg.weights_inputs() and view.kernel_fingerprint() == cfg.kernel_fingerprint()
    return view


def job_module_env(cfg: DeploymentConfig, job: JobName) -> dict[str, str]:
    return {CONFIG_ENV_VAR: job_config(cfg, job).to_json()}
