"""A job's run exposes nothing: each job of a first `up` runs in an ephemeral app that holds its one
function, with no web endpoint (on Modal a `-dev` URL whose first request would start 8x B200) and
no class; only the deployed app has the server's web URL."""

from __future__ import annotations

from serving.config import DeploymentConfig

from .conftest import rig
from .harness import StackConfig

JOB_FUNCTIONS = {"download_model", "compile_deepgemm", "verify_setup"}


def test_each_job_runs_in_an_app_of_its_own_one_function_and_no_web_url() -> None:
    config = StackConfig.of("staging")
    cfg = DeploymentConfig.model_validate(config.deployment)
    with rig() as running:
        up = running.harness("staging", config).up()
        assert up.ok, up.text
        with running.cp.state.lock:
            job_apps = [(app.name, dict(app.functions), dict(app.web_urls), dict(app.classes))
                        for app in running.cp.state.ephemeral_apps]  # fmt: skip
            deployed = running.cp.app(cfg.app_name, up.outputs["modal_environment"])
            deployed_urls, deployed_functions = dict(deployed.web_urls), set(deployed.functions)

    assert sorted(tag for _, functions, _, _ in job_apps for tag in functions) == sorted(JOB_FUNCTIONS)
    for name, functions, web_urls, classes in job_apps:
        assert len(functions) == 1, f"{name} holds {sorted(functions)}"
        assert web_urls == {} and classes == {}, f"{name} exposes {web_urls} / {classes}"
    assert list(deployed_urls) == ["Server.*"] and deployed_functions >= JOB_FUNCTIONS
