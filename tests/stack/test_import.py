"""An import through the pinned CLI: a program that declares an existing Modal volume with
`ResourceOptions(import_="<environment>/<name>")`, run by the real engine (tests/stack/cli.py).

It does not work today, and not for want of our providers: the engine's import Read carries neither
state nor inputs (pulumi v3.277.0 pkg/resource/deploy/step.go, `ImportStep.Apply`, the same in
v3.260.0), and the Python SDK's dynamic provider server finds the provider it should call only in
one of them (pulumi 3.272.0 `pulumi/dynamic/__main__.py`, `Read`: properties, else inputs), so it
fails with KeyError '__provider' before our code runs. `pulumi import` reads the same way (and the
CLI built here cannot run it at all: it needs the language host). Nothing of ours needs an import,
since every create adopts an existing Modal object of the same name. Strict: when a bumped CLI or
SDK imports, this test passes, pytest says so, and the README's limit can go.
"""

from __future__ import annotations

import json

import pulumi
import pytest

from providers.volume import ModalVolume

from .conftest import rig

ENVIRONMENT = "glm-staging"
STACK = "imports"
REFUSAL = "KeyError: '__provider'"


class ImportRefused(Exception):
    """The dynamic provider server could not find the provider for the import's Read."""


def declared_volume() -> None:
    ModalVolume("cache", name="cache", environment=ENVIRONMENT,
                opts=pulumi.ResourceOptions(import_=f"{ENVIRONMENT}/cache"))  # fmt: skip


@pytest.mark.xfail(strict=True, raises=ImportRefused, reason=f"an import's Read carries no provider: {REFUSAL}")
def test_a_program_imports_an_existing_volume_by_its_id_and_changes_nothing_on_modal() -> None:
    with rig() as running:
        running.cp.create_environment(ENVIRONMENT)
        existing = running.cp.create_volume("cache", environment=ENVIRONMENT).id
        running.world.check("stack", "init", STACK)
        mark = running.cp.mark()
        imported = running.world.program_run("up", STACK, program=declared_volume)
        if not imported.ok and REFUSAL in imported.text:
            raise ImportRefused(imported.text[-2000:])
        again = running.world.program_run("up", STACK, program=declared_volume, expect_no_changes=True)
        mutations = running.cp.mutating_calls(since=mark)
        state = json.loads(running.world.check("stack", "export", "--stack", STACK).stdout)

    volumes = [res for res in state["deployment"]["resources"] if res["type"].endswith("modal:Volume")]
    assert imported.ok, imported.text
    assert imported.op("cache") == "import"
    assert again.ok and again.op("cache") == "same", again.text
    assert mutations == []
    assert [res["outputs"]["volume_id"] for res in volumes] == [existing]  # the one that was there
