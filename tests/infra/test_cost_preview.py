"""How the program knows, in a preview, which runs the `up` makes (infra/cost_preview.py), and what
the deploy's line prices."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pulumi
import pytest

from infra import cost_preview
from infra.costs import CostSettings
from serving.config import DeploymentConfig


class PreviewMocks(pulumi.runtime.Mocks):
    """An engine whose plan (re)creates the resources named "planned": no id for them in a preview."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        return (None if args.name == "planned" else f"{args.name}-id"), dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


class Thing(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("test:index:Thing", name, {})


@pytest.fixture
def preview_engine():
    # The mocks register resources on this thread's event loop. A test that ran before in the same
    # process may have left the main thread without one (asyncio.run ends with set_event_loop(None)),
    # so the mocks get a loop of their own.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(PreviewMocks(), preview=True)
    yield
    pulumi.runtime.set_mocks(PreviewMocks(), preview=False)
    asyncio.set_event_loop(None)
    loop.close()


@pulumi.runtime.test
def _planned_in_a_preview():
    async def check() -> None:
        assert await cost_preview._unknown(Thing("planned").id) is True
        assert await cost_preview._unknown(Thing("kept").id) is False

    return pulumi.Output.from_input(check())


def test_a_preview_leaves_exactly_the_planned_ids_unknown(preview_engine: None) -> None:
    # Pins the SDK member `_unknown` relies on (Output.is_known, an implementation detail of 3.272.0).
    _planned_in_a_preview()


def settings(smoke_test: bool, min_containers: int = 0) -> SimpleNamespace:
    deployment = DeploymentConfig.model_validate(
        {"app_name": "glm-test", "scaling": {"min_containers": min_containers, "scaledown_window": 300}}
    )
    return SimpleNamespace(deployment=deployment, infra=SimpleNamespace(smoke_test=smoke_test))


def test_a_deploy_without_smoke_test_or_warm_containers_starts_nothing() -> None:
    run = cost_preview.deploy_estimate(settings(smoke_test=False), CostSettings())
    assert run.usd == (0, 0)
    assert run.line() == ("app: deploys glm-test on 8x B200: 0s (no container starts until a request "
                          "(min_containers 0); $50.00/h per container while one runs), est. $0.00")  # fmt: skip


def test_the_smoke_test_pays_one_cold_start_and_the_scaledown_window() -> None:
    run = cost_preview.deploy_estimate(settings(smoke_test=True), CostSettings())
    assert run.seconds == (360 + 300, 900 + 300)
    assert run.usd[0] == pytest.approx(660 * 50.0028 / 3600, rel=1e-3)


def test_warm_containers_each_pay_a_cold_start() -> None:
    one = cost_preview.deploy_estimate(settings(smoke_test=False, min_containers=1), CostSettings())
    two = cost_preview.deploy_estimate(settings(smoke_test=True, min_containers=2), CostSettings())
    assert one.seconds == two.seconds == (360, 900)
    assert two.usd[1] == pytest.approx(2 * one.usd[1])
    assert "kept warm, then $100.01/h" in two.line()
