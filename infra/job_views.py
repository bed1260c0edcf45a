"""What each one-off setup job needs of the deployment config, and nothing else.

A job imports the serving module with a config (in `module_env`), and that config is stored with the
job. If every job got the whole config, a scaling knob or a warmup timeout would show up in
`pulumi preview` as a change of all three jobs (recorded for their next run, not run, but alarming to
read). So each job gets the deployment config with what it never reads reset to the defaults:

- every job: scaling, keep-alive, the edge (and the keep-alive's token secret), and every timeout but
  its own. This also keeps the ephemeral app a job runs in from starting warm `min_containers` of the
  8-GPU server, or a keep-alive schedule. A job's own app has no web endpoint, so the edge is not its.
- all but the download: the download settings (workers, attempts, CPU, memory).
- the download: the GPUs, the parallelism and every launch flag; the weights do not depend on them.
  (The SGLang release stays: the job's ephemeral app also defines the compile and server functions,
  whose image Modal builds with the app, so another release would be pulled for nothing.)
- the verify: the launch flags that do not shape kernels, i.e. those serving/config.py does not mark
  SHAPES_KERNELS (it checks the marker of the kernels, which names the marked ones).
- the compile keeps every launch flag: it must compile with exactly the serving arguments
  (serving/commands.py).

Whether a job RUNS is decided by its triggers (`weights_inputs()` / `kernel_inputs()`), never by
this view; the view is checked to leave those unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from serving.config import CONFIG_ENV_VAR, DeploymentConfig, Download, SecretNames, Timeouts

JobName = Literal["download", "compile", "verify"]

DEFAULTS = DeploymentConfig()
# The keep-alive's proxy auth token secret: no job reads it.
EDGE_TOKEN_SECRET_FIELDS = ("edge_token", "edge_token_id_key", "edge_token_secret_key")


def job_config(cfg: DeploymentConfig, job: JobName) -> DeploymentConfig:
    """`cfg` as the job's container sees it (validated again, so it is a config that can run)."""
    data = cfg.model_dump()
    data["scaling"] = DEFAULTS.scaling.model_dump()
    data["keepalive"] = DEFAULTS.keepalive.model_dump()
    data["edge"] = DEFAULTS.edge.model_dump()
    data["secrets"] = _without_edge_token_secret(data["secrets"])
    data["timeouts"] = Timeouts(**{job: getattr(cfg.timeouts, job)}).model_dump()
    if job != "download":
        data["download"] = Download().model_dump()
    if job == "download":
        for section in ("hardware", "parallelism", "launch"):
            data[section] = getattr(DEFAULTS, section).model_dump()
        data["model"]["served_name"] = DEFAULTS.model.served_name
    elif job == "verify":
        data["launch"] = cfg.launch.kernel_flags_only().model_dump()
        data["model"]["served_name"] = DEFAULTS.model.served_name
    view = DeploymentConfig.model_validate(data)
    # The view must never change what the job produces or checks.
    if view.weights_inputs() != cfg.weights_inputs() or (
        job != "download" and view.kernel_fingerprint() != cfg.kernel_fingerprint()
    ):
        raise AssertionError(f"the {job} job's view of the config changed what it produces")
    return view


def _without_edge_token_secret(secrets: dict) -> dict:
    """The secret names with the keep-alive's token secret at its defaults, unless those clash with
    the job's own names (then as they are: renaming it only records a new config for the jobs)."""
    reset = {**secrets, **{key: getattr(DEFAULTS.secrets, key) for key in EDGE_TOKEN_SECRET_FIELDS}}
    try:
        SecretNames.model_validate(reset)
    except ValidationError:
        return secrets
    return reset


def job_module_env(cfg: DeploymentConfig, job: JobName) -> dict[str, str]:
    return {CONFIG_ENV_VAR: job_config(cfg, job).to_json()}
