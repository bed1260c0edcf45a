"""A deployed Modal app (from a module that defines one) as a Pulumi resource.

Inputs:  module (e.g. "serving.app"), app_name, environment, module_env (environment variables the
         module reads at import, e.g. its serialized config), source_digest (a digest of the module's
         source, so a code change redeploys), redeploy_triggers (any JSON object; a change redeploys,
         and the module never sees it), web_endpoint (which web endpoint's URL is `web_url`;
         optional when the app has exactly one), timeout_seconds, strategy ("rolling": new
         containers take over while the old ones drain; "recreate": the old ones are stopped as
         part of the deploy), tag and commit (what the next deploy carries, see below).
Outputs: the inputs, plus app_id, deployment_version, deployed_at (ISO 8601, UTC), web_url,
         web_urls ({endpoint: url}, endpoints named "function" or "Class.method"), and
         stack_deployment_version (the version this resource's last deploy made).
Id:      "<environment>/<app_name>" (what `pulumi import` takes).

Deploying runs `python -m providers.runs.runner deploy` (see runner.py) in a child process that imports
the module with module_env, so the provider process never holds one stack's app objects. A deploy
of a name that is already deployed is a new version of that app, which is how `create` adopts an
app deployed by hand or by an earlier `up` that failed half-way.

What changes do: module, module_env, source_digest or redeploy_triggers redeploy the same app in
place (a new deployment version, same app id); app_name or environment replace it (the new one is
deployed, then the old one stopped). web_endpoint and timeout_seconds change nothing on Modal.
tag, commit and strategy are never diffed: they say how the next deploy is made (the tag is Modal's
deployment tag, shown by `modal app history`), and a new commit alone is no reason to deploy; the
outputs keep those of the deployment this resource made.

redeploy_triggers is for what the module does not read but its containers depend on, e.g. a digest
of a Modal secret's values (a running container reads its secrets once, at start).

A deploy whose function definitions did not change is a no-op on Modal (no new version; the running
containers, which read their secrets when they started, go on). So when only redeploy_triggers
changed, the deploy is followed by `modal app rollover --strategy <strategy>` (deployments.py),
which Modal offers for exactly this: a new version of the same functions with fresh containers
(the old ones drain, or with `recreate` are stopped). A create that Modal answers as a no-op (an
app deployed before with the same definitions) is rolled over as well: the stack may just have
written its secrets. A no-op that needs no fresh containers is recorded as what it is: the live
version stays, with its own tag and commit. Its values may be
Pulumi secrets: the engine marks each output key secret whose input was, so a secret trigger keeps
module_env free of secrets, and the module's config readable in state and in `pulumi preview --diff`.

`read` looks the deployment up by name: a stopped app shows as gone, and the next `up` deploys it.
A deployment version other than stack_deployment_version was made by someone else (a `modal deploy`
by hand, a `modal app rollback`): `pulumi refresh` shows it as a changed deployment_version, and the
diff of the next `up` reports the app changed, whose update deploys the declared config again.
`delete` stops the app (its containers end; its volumes and secrets are untouched).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import modal
import pulumi
import pydantic
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from providers.base import (
    EnvironmentName,
    InputModel,
    ModalProvider,
    ObjectName,
    join_id,
    precise_diff,
    split_id,
    strip_internal,
)
from providers.modal_access.deployments import RolloverError, deployment_info, rollover
from providers.modal_access.lookups import found_in
from providers.modal_access.retry import modal_call
from providers.runs.module_runs import ModuleEnv, ModulePath
from providers.runs.supervisor import format_elapsed, run_with_retries
from providers.shared import ProviderError, progress
from serving.modal_rules import check_deployment_tag

# Every input, in the order a diff reports them.
FIELDS = (
    "module",
    "app_name",
    "environment",
    "module_env",
    "source_digest",
    "redeploy_triggers",
    "web_endpoint",
    "timeout_seconds",
)
# Inputs whose change means another app.
REPLACE_ON = ("app_name", "environment")
# Inputs whose change means a new deployment of the same app.
REDEPLOY_ON = ("module", "module_env", "source_digest", "redeploy_triggers")
# How each deploy is made, never a reason for one: not diffed.
DEPLOY_METADATA = ("tag", "commit", "strategy")
# Outputs of a deployment.
DEPLOYMENT_OUTPUTS = ("app_id", "deployment_version", "deployed_at", "web_url", "web_urls", "stack_deployment_version")
# Image builds of a large serving image can take a while the first time.
DEFAULT_TIMEOUT_SECONDS = 3600
MAX_TIMEOUT_SECONDS = 6 * 3600


class AppInputs(InputModel):
    # May hold secrets among plain values: a failure about the whole field must not name it bare.
    secret_capable_fields = frozenset({"redeploy_triggers"})

    module: ModulePath
    app_name: ObjectName
    environment: EnvironmentName
    module_env: ModuleEnv = {}
    source_digest: str = ""
    redeploy_triggers: dict[str, Any] = {}
    web_endpoint: str | None = None
    timeout_seconds: int = pydantic.Field(DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS)
    strategy: Literal["rolling", "recreate"] = "rolling"
    tag: Annotated[str, pydantic.AfterValidator(check_deployment_tag)] = ""
    commit: str = ""


def _where(app_name: str, environment: str) -> str:
    return f"app '{app_name}' in environment '{environment}'"


def _web_url(web_urls: dict[str, str], web_endpoint: str | None) -> str:
    """The URL of `web_endpoint`, or of the app's only web endpoint; "" when there is none to pick."""
    if web_endpoint:
        return web_urls.get(web_endpoint, "")
    return next(iter(web_urls.values())) if len(web_urls) == 1 else ""


def _deployment_outputs(deployment: dict[str, Any], web_endpoint: str | None) -> dict[str, Any]:
    """What Modal says of a deployment (as `deployment_info` returns it, or as old outputs hold it)."""
    web_urls = dict(deployment.get("web_urls") or {})
    return {
        "app_id": deployment.get("app_id"),
        "deployment_version": deployment.get("deployment_version"),
        "deployed_at": deployment.get("deployed_at", ""),
        "web_urls": web_urls,
        "web_url": _web_url(web_urls, web_endpoint),
    }


def _deployed_outputs(inputs: AppInputs, deployment: dict[str, Any]) -> dict[str, Any]:
    """The outputs after this resource deployed `inputs` as `deployment`."""
    return {
        **inputs.model_dump(mode="json"),
        **_deployment_outputs(deployment, inputs.web_endpoint),
        "stack_deployment_version": deployment.get("deployment_version"),
    }


def drifted(outputs: dict[str, Any]) -> bool:
    """Whether the live deployment (as the last refresh saw it) is not the one this resource made."""
    # Pulumi numbers travel as floats: 3.0 is version 3.
    ours, live = outputs.get("stack_deployment_version"), outputs.get("deployment_version")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ours, live))
    return numbers and ours != live


def _check_web_endpoint(inputs: AppInputs, web_urls: dict[str, str], *, just_deployed: bool) -> None:
    if inputs.web_endpoint and inputs.web_endpoint not in web_urls:
        known = ", ".join(sorted(web_urls)) or "none"
        has = "deployed, but it has" if just_deployed else "has"
        raise ProviderError(
            f"{_where(inputs.app_name, inputs.environment)} {has} no web endpoint {inputs.web_endpoint!r} "
            f"(web endpoints: {known}). Fix web_endpoint and run `pulumi up` again."
        )


def _lookup(app_name: str, environment: str) -> dict[str, Any] | None:
    return modal_call(
        deployment_info, app_name, environment, what=f"look up deployed {_where(app_name, environment)}"
    )


def _deploy(inputs: AppInputs) -> dict[str, Any]:
    where = _where(inputs.app_name, inputs.environment)
    progress(f"deploying {where} from {inputs.module} (timeout {format_elapsed(inputs.timeout_seconds)})")
    deployment = run_with_retries(
        "deploy",
        {"module": inputs.module, "app_name": inputs.app_name, "environment": inputs.environment,
         "tag": inputs.tag, "strategy": inputs.strategy},  # fmt: skip
        inputs.module_env,
        label=f"deploy {inputs.app_name}",
        what=f"deploy of {where}",
        timeout_seconds=inputs.timeout_seconds,
        retry_started=True,  # deploying the same app again is idempotent
    )
    _check_web_endpoint(inputs, deployment.get("web_urls") or {}, just_deployed=True)
    if not deployment.get("noop"):
        progress(f"{where} deployed: version {deployment.get('deployment_version')} ({deployment.get('app_id')})")
    return deployment


def _apply(inputs: AppInputs, *, fresh_containers: bool) -> dict[str, Any]:
    """Deploy `inputs`. Modal answers a deploy whose function definitions did not change as a no-op
    (no new version, running containers untouched, not even by the recreate strategy). When the
    containers must start anew all the same (`fresh_containers`: something they read once at start
    changed that the definitions do not show, e.g. a secret's values), roll them over."""
    where = _where(inputs.app_name, inputs.environment)
    deployment = _deploy(inputs)
    if not deployment.get("noop"):
        return deployment
    version = deployment.get("deployment_version")
    if not fresh_containers:
        progress(f"{where}: Modal found nothing to deploy; version {version} stays live")
        return deployment
    progress(
        f"{where}: Modal found nothing to deploy (version {version} stays live), but its containers read "
        f"their secrets when they started: rolling them over (`modal app rollover --strategy {inputs.strategy}`)"
    )
    try:
        rolled = rollover(inputs.app_name, inputs.environment, inputs.strategy)
    except (RolloverError, modal.exception.Error) as error:
        raise ProviderError(
            f"{where}: the rollover that would replace its containers failed ({error}); the containers that run "
            "still hold what they read at start. Run `pulumi up` again."
        ) from None
    if rolled["warning"]:
        progress(f"{where}: rolled over, but an old container may still run: {rolled['warning']}")
    progress(f"{where} rolled over: version {rolled['deployment_version']}, fresh containers")
    return {**rolled, "noop": False, "rolled_over": True}


class AppProvider(ModalProvider):
    inputs_model = AppInputs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = precise_diff(olds, news, FIELDS, replace_on=REPLACE_ON, stables=("app_id",))
        if drifted(olds) and not result.replaces:
            # Someone else's deployment is live: the update deploys the declared config again.
            result.changed.append("deployment_version")
            result.changes = True
        return result

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        assert isinstance(inputs, AppInputs)
        # An app deployed before (by hand, or by an `up` that failed half-way) is adopted; if Modal finds
        # nothing to change, its containers may still hold secrets this `up` has just written.
        deployment = _apply(inputs, fresh_containers=True)
        return CreateResult(join_id(inputs.environment, inputs.app_name), _deployed_outputs(inputs, deployment))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        current = strip_internal(props)
        importing = not current.get("app_name")
        if importing:
            environment, app_name = split_id(id_, "App")
        else:
            environment, app_name = current["environment"], current["app_name"]
        deployment = _lookup(app_name, environment)
        if deployment is None:
            return ReadResult("", {})  # not deployed (stopped or never): the engine drops it, `up` deploys
        if importing:
            # Modal cannot tell which module and config produced the deployment: the next `up` with the
            # program's module, module_env, source_digest and triggers redeploys once, then tracks them.
            recovered = {"app_name": app_name, "environment": environment}
            return ReadResult(id_, {**recovered, **_deployment_outputs(deployment, None)}, recovered)
        outputs = {**current, **_deployment_outputs(deployment, current.get("web_endpoint"))}
        if drifted(outputs):
            progress(
                f"{_where(app_name, environment)}: version {int(outputs['deployment_version'])} is live, not "
                f"version {int(outputs['stack_deployment_version'])} that this stack deployed (a `modal deploy` "
                "by hand or a `modal app rollback`); the next `pulumi up` deploys the declared config again"
            )
        return ReadResult(id_, outputs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs = self.validated(news)
        assert isinstance(inputs, AppInputs)
        new_values = inputs.model_dump(mode="json")
        if drifted(olds) or any(olds.get(name) != new_values.get(name) for name in REDEPLOY_ON):
            fresh = olds.get("redeploy_triggers") != new_values.get("redeploy_triggers")
            deployment = _apply(inputs, fresh_containers=fresh)
            outputs = _deployed_outputs(inputs, deployment)
            if deployment.get("noop") or deployment.get("rolled_over"):
                # No deploy of ours is live (a no-op, or a rollover of the deploy that was): the live
                # version keeps the tag and commit it was deployed with.
                outputs.update({name: olds.get(name, "") for name in ("tag", "commit")})
            return UpdateResult(outputs)
        # web_endpoint or timeout_seconds only: nothing to do on Modal. The deployment stays the
        # one made with the old tag, commit and strategy.
        _check_web_endpoint(inputs, olds.get("web_urls") or {}, just_deployed=False)
        kept = {name: olds.get(name, "") for name in DEPLOY_METADATA}
        return UpdateResult({**_deployed_outputs(inputs, olds), **kept,
                             "stack_deployment_version": olds.get("stack_deployment_version")})  # fmt: skip

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if props.get("app_name"):
            environment, app_name = props["environment"], props["app_name"]
        else:
            environment, app_name = split_id(id_, "App")
        where = _where(app_name, environment)

        def stop() -> bool:
            # Gone, its environment included, under either answer Modal gives a missing environment.
            app = found_in(environment, lambda: modal.App.lookup(app_name, environment_name=environment))
            if app is None:
                return False
            app.stop()
            return True

        if modal_call(stop, what=f"stop {where}"):
            progress(f"{where} stopped")
        else:
            progress(f"{where} is not deployed: nothing to stop")


class ModalAppDeployment(Resource, module="modal", name="AppDeployment"):
    """The Modal app defined in `module`, deployed as `app_name`; a config, source or trigger change redeploys it."""

    module: pulumi.Output[str]
    app_name: pulumi.Output[str]
    environment: pulumi.Output[str]
    module_env: pulumi.Output[dict]
    source_digest: pulumi.Output[str]
    redeploy_triggers: pulumi.Output[dict]
    web_endpoint: pulumi.Output[str]
    timeout_seconds: pulumi.Output[int]
    strategy: pulumi.Output[str]
    tag: pulumi.Output[str]
    commit: pulumi.Output[str]
    app_id: pulumi.Output[str]
    deployment_version: pulumi.Output[int]
    deployed_at: pulumi.Output[str]
    web_url: pulumi.Output[str]
    web_urls: pulumi.Output[dict]
    stack_deployment_version: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        module: pulumi.Input[str],
        app_name: pulumi.Input[str],
        environment: pulumi.Input[str],
        module_env: pulumi.Input[dict] | None = None,
        source_digest: pulumi.Input[str] = "",
        redeploy_triggers: pulumi.Input[dict] | None = None,
        web_endpoint: pulumi.Input[str] | None = None,
        timeout_seconds: pulumi.Input[int] = DEFAULT_TIMEOUT_SECONDS,
        strategy: pulumi.Input[str] = "rolling",
        tag: pulumi.Input[str] = "",
        commit: pulumi.Input[str] = "",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "module": module,
            "app_name": app_name,
            "environment": environment,
            "module_env": module_env if module_env is not None else {},
            "source_digest": source_digest,
            "redeploy_triggers": redeploy_triggers if redeploy_triggers is not None else {},
            "web_endpoint": web_endpoint,
            "timeout_seconds": timeout_seconds,
            "strategy": strategy,
            "tag": tag,
            "commit": commit,
            **dict.fromkeys(DEPLOYMENT_OUTPUTS),
        }
        super().__init__(AppProvider(), resource_name, props, opts)
