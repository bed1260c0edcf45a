# # What anonymous and hostile requests cost an idle deployment, with and without Modal's edge check
#
# Deploys the prod stack of the real program (infra/) with the pinned `pulumi` binary onto the local
# Modal control plane twice, in two worlds: as the stack ships (the Server requires proxy auth, the
# stack makes its tokens) and in the reference recipe's layout (the same app without proxy auth:
# `deployment.edge.requires_proxy_auth: false`, with `allowPublicEndpoint: true`). Then, for each, a
# fixed set of requests, each sent while the app is idle (the plane's clock is moved past the
# Server's scaledown window first, so every request meets an app with no container):
#
#   no headers; a wrong secret; a revoked token; a token of another environment; the API key alone;
#   /health_generate; /metrics; a random path
#
# For each request: the answer, the containers it started, and, once every container has scaled down,
# the GPU-seconds they held and what that costs at the stack's prices (infra/costs.py, or the stack's
# `glm-modal:costs`). The plane's containers start at once and serve in no time, so a container's
# life here is its scaledown window alone: Modal's real cost adds the cold start (minutes on 8x B200).
#
#     .venv/bin/python bench/exposure.py
#
# The last line is one JSON object: {"ours": {...}, "recipe": {...}}, each with per-request rows and
# totals (requests, answered_by_a_container, containers_started, gpu_seconds, usd).

from __future__ import annotations

import json
import sys
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path; the harness lives under tests/ at the root.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from infra.costs import load_costs  # noqa: E402
from serving.config import DeploymentConfig  # noqa: E402
from tests.modal_control_plane.clock import MovableClock  # noqa: E402
from tests.stack.conftest import rig  # noqa: E402
from tests.stack.edge_requests import hostile_requests, http_status  # noqa: E402
from tests.stack.harness import StackConfig  # noqa: E402

STACK = "prod"
LAYOUTS = ("ours", "recipe")


def stack_config(layout: str) -> StackConfig:
    config = StackConfig.of(STACK)
    config.values["glm-modal:clientTokens"] = ["search"]
    if layout == "recipe":
        config.deployment.setdefault("edge", {})["requires_proxy_auth"] = False
        config.values["glm-modal:allowPublicEndpoint"] = True
    return config


def measure(layout: str) -> dict:
    config = stack_config(layout)
    cfg = DeploymentConfig.model_validate(config.deployment)
    costs, problems = load_costs(config.values.get("glm-modal:costs"), cfg.hardware.gpu_type, "glm-modal:costs")
    if costs is None:
        raise SystemExit(f"{STACK}: bad prices: {problems}")
    usd_per_gpu_second = costs.prices.gpu_per_hour[cfg.hardware.gpu_type] / 3600
    idle = cfg.scaling.scaledown_window + 1
    clock = MovableClock()
    with rig(clock=clock) as running:
        applied = running.harness(STACK, config).up()
        if not applied.ok:
            raise SystemExit(f"{layout}: pulumi up failed:\n{applied.text}")
        outputs = applied.outputs
        environment, app = outputs["modal_environment"], outputs["app_name"]
        rows = []
        for name, (url, headers, body) in hostile_requests(running.cp, outputs, "search").items():
            clock.advance(idle)  # the app is idle: every container of an earlier request has scaled down
            started_before = running.cp.containers_started(app, environment)
            gpu_before = running.cp.gpu_seconds(app, environment)
            status = http_status(url, headers, body)
            started = running.cp.containers_started(app, environment) - started_before
            clock.advance(idle)  # let what it started scale down, so its whole life is counted
            gpu_seconds = running.cp.gpu_seconds(app, environment) - gpu_before
            answered = sum(1 for record in running.web.edge_records[-1:] if record.task_id)
            rows.append({"request": name, "status": status, "answered_by_a_container": answered,
                         "containers_started": started, "gpu_seconds": round(gpu_seconds, 1),
                         "usd": round(gpu_seconds * usd_per_gpu_second, 2)})  # fmt: skip
    totals = {key: sum(row[key] for row in rows) for key in ("answered_by_a_container", "containers_started")}
    gpu_total = sum(row["gpu_seconds"] for row in rows)
    totals.update(requests=len(rows), gpu_seconds=round(gpu_total, 1), usd=round(gpu_total * usd_per_gpu_second, 2))
    return {"gpu": cfg.hardware.modal_gpu, "scaledown_window": cfg.scaling.scaledown_window,
            "usd_per_gpu_hour": costs.prices.gpu_per_hour[cfg.hardware.gpu_type],
            "rows": rows, "totals": totals}  # fmt: skip


def print_table(results: dict[str, dict]) -> None:
    names = [row["request"] for row in results["ours"]["rows"]]
    print(f"{'request':32} | " + " | ".join(f"{layout + ': status, containers, GPU-s, $':>38}" for layout in LAYOUTS))
    print("-" * (35 + 41 * len(LAYOUTS)))
    for index, name in enumerate(names):
        cells = []
        for layout in LAYOUTS:
            row = results[layout]["rows"][index]
            cells.append(
                f"{row['status']:>6} {row['containers_started']:>6} {row['gpu_seconds']:>12.0f} {row['usd']:>10.2f}"
            )
        print(f"{name:32} | " + " | ".join(f"{cell:>38}" for cell in cells))
    print("-" * (35 + 41 * len(LAYOUTS)))
    for layout in LAYOUTS:
        result = results[layout]
        totals = result["totals"]
        print(f"{layout}: {totals['requests']} requests, {totals['answered_by_a_container']} answered by a container, "
              f"{totals['containers_started']} containers started, {totals['gpu_seconds']:.0f} GPU-s, "
              f"${totals['usd']:.2f} ({result['gpu']}, scaledown {result['scaledown_window']} s, "
              f"${result['usd_per_gpu_hour']}/GPU-h; cold starts not included)")  # fmt: skip


def main() -> None:
    results = {layout: measure(layout) for layout in LAYOUTS}
    print_table(results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
