"""Each job's view of a valid config is itself a valid config: the views reset what a job never reads
to the defaults, and no cross-field rule of serving/config.py may then refuse the mix."""

from __future__ import annotations

import pytest

from infra.job_views import job_config
from serving.config import DeploymentConfig

# Valid configs at the edges of the cross-field rules.
EDGES = {
    "fewest gpus the weights fit": {"hardware": {"gpu_count": 4}, "parallelism": {"tp": 4}},
    "short startup and warmup": {"timeouts": {"startup": 200, "warmup_request": 100, "server": 300}},
    "retries just inside the download": {
        "download": {"attempts": 10, "backoff_seconds": 700},
        "timeouts": {"download": 7200},
    },
    "short download with few retries": {
        "download": {"attempts": 1, "backoff_seconds": 30},
        "timeouts": {"download": 60},
    },
    "longest scaledown": {"scaling": {"scaledown_window": 3600, "min_containers": 2, "max_containers": 2}},
    "open edge, keep-alive with its own token secret": {
        "edge": {"requires_proxy_auth": False},
        "keepalive": {"enabled": True},
        "secrets": {"edge_token": "prod-edge", "edge_token_id_key": "ID", "edge_token_secret_key": "SECRET"},
    },
    # The edge token secret's defaults are the job's own secret names: its names stay as they are.
    "secret names that the edge defaults would clash with": {
        "secrets": {"api_key": "glm51-edge-token", "edge_token": "edge", "api_key_key": "EDGE_TOKEN_ID",
                    "edge_token_id_key": "ID"},
    },
    "own mounts and secret keys": {
        "storage": {"weights_mount": "/weights", "kernels_mount": "/kernels"},
        "secrets": {"hf_token_key": "HUB", "api_key_key": "KEY"},
    },
    "fp8 kv without speculation": {
        "launch": {
            "speculative": {"algorithm": None},
            "memory": {"kv_cache_dtype": "fp8_e4m3", "mem_fraction_static": 0.95},
        },
    },
    "keep-alive": {"keepalive": {"enabled": True}},
}


@pytest.mark.parametrize("job", ["download", "compile", "verify"])
@pytest.mark.parametrize("changes", EDGES.values(), ids=EDGES.keys())
def test_every_jobs_view_of_a_valid_config_is_valid_and_keeps_its_triggers(changes: dict, job: str) -> None:
    cfg = DeploymentConfig.model_validate(changes)
    view = job_config(cfg, job)  # validates the view, and checks it changes no trigger
    assert view.weights_inputs() == cfg.weights_inputs()


@pytest.mark.parametrize("job", ["download", "compile", "verify"])
def test_no_job_sees_the_edge_or_the_keepalives_token_secret(job: str) -> None:
    """Who may call the server is no job's business: an edge or token-secret change records nothing."""
    edited = DeploymentConfig.model_validate(
        {"edge": {"requires_proxy_auth": False}, "secrets": {"edge_token": "other-edge-token"}}
    )
    assert job_config(edited, job) == job_config(DeploymentConfig(), job)
