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
