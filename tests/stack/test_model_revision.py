"""The model revision, through the real CLI: the download records the commit a branch resolved to
(from the Hub metadata of the snapshot) as the stack output `model_commit`, and a prod stack whose
revision is a branch is warned in its preview how to pin that commit."""

from __future__ import annotations

from .conftest import rig
from .harness import HUB_COMMIT, PROJECT, StackConfig, deployment_edits

PIN_ADVICE = "Pin the commit it downloaded: `pulumi stack output model_commit --stack prod`"


def test_prod_on_a_branch_is_warned_how_to_pin_the_commit_its_download_recorded() -> None:
    config = StackConfig.of("prod")
    assert config.deployment["model"]["revision"] == "main"
    with rig() as running:
        harness = running.harness("prod")
        preview = harness.preview()
        up = harness.up()
        pinned = StackConfig.of("prod")
        deployment_edits(model__revision=up.outputs.get("model_commit"))(pinned)
        pinned_preview = harness.preview(pinned)

    assert preview.ok and up.ok, up.text
    assert PIN_ADVICE in preview.text
    assert f"{PROJECT}:deployment.model.revision is 'main', a branch or tag, not a commit" in preview.text
    assert preview.modal_calls == []  # the warning reads the config only
    assert up.outputs["model_commit"] == HUB_COMMIT
    # Pinned: no warning; the download runs once more (it finds its files), and so does the compile.
    assert pinned_preview.ok and PIN_ADVICE not in pinned_preview.text
    assert {"download-weights", "compile-kernels"} <= set(pinned_preview.changed())


def test_staging_follows_main_without_a_warning() -> None:
    with rig() as running:
        preview = running.harness("staging").preview()

    assert preview.ok and "not a commit" not in preview.text
