"""The containers of deployed apps: which ones exist, which version each runs, what secrets it read.

What Modal does, and so what this does:
- A web request to a deployed function with no container of the live version starts one (a cold
  start); later requests reuse it. A container reads its secrets ONCE, at start (Modal injects them
  as environment variables), so a secret updated afterwards reaches only containers started later:
  `Container.secret_values` is that snapshot, and the web front (web.py) answers with it.
- A new version (a deploy that changed something, a rollover, a rollback) makes the running
  containers of older versions outdated. Under the rolling strategy they drain: they take no new
  requests, but they exist (and hold their GPUs) until they are stopped; how long Modal lets an idle
  outdated container live is not documented, so here it lives until something stops it, the
  strictest reading. `modal app rollover --strategy recreate`, `deploy(strategy="recreate")` and
  `modal app rollback --strategy recreate` stop them from the client: `TaskList` for the containers
  enqueued before the new version's `deployed_at`, then `ContainerStop` for each, polled until none
  is listed (modal/runner.py `_stop_and_wait_for_containers`).
- A deploy that Modal answers as a no-op (nothing changed) leaves every container as it was.
- Stopping an app stops all of its containers.
"""

from __future__ import annotations

from collections.abc import Callable

from modal_proto import api_pb2

from .state import App, Container, ControlPlaneState, FunctionRecord


class Containers:
    """The containers of every deployed app. Mutate only while holding `state.lock`."""

    def __init__(self, state: ControlPlaneState, now: Callable[[], float]):
        self._state = state
        self._now = now

    def _secret_values(self, record: FunctionRecord) -> dict[str, str]:
        values: dict[str, str] = {}
        for secret_id in record.secret_ids:  # later secrets win, as in Modal's environment injection
            secret = self._state.by_id.get(secret_id)
            if secret is not None:
                values.update(secret.values)
        return values

    def start(self, app: App, record: FunctionRecord) -> Container:
        """A new container of `record` for the app's live version, reading its secrets now."""
        container = Container(
            task_id=self._state.new_id("ta"),
            app_id=app.id,
            function_id=record.id,
            version=app.deployment_version,
            enqueued_at=self._now(),
            secret_values=self._secret_values(record),
        )
        app.containers.append(container)
        return container

    def for_web_request(self, url: str) -> Container | None:
        """The container that serves a request to `url` (a function's web URL, or below it): a running
        one of the live version, else a new one (cold start). None when no deployed app serves `url`."""
        found = self._deployed_function_at(url)
        if found is None:
            return None
        app, record = found
        for container in app.live_containers:
            if container.state == "running" and container.function_id == record.id:
                container.requests += 1
                return container
        container = self.start(app, record)
        container.requests += 1
        return container

    def _deployed_function_at(self, url: str) -> tuple[App, FunctionRecord] | None:
        for app in self._state.all_apps():
            if app.state != "deployed":
                continue
            for record in app.functions.values():
                if record.web_url and (url == record.web_url or url.startswith(record.web_url.rstrip("/") + "/")):
                    return app, record
        return None

    def outdate(self, app: App) -> None:
        """The app has a new live version: its running containers of older versions drain."""
        for container in app.containers:
            if container.state == "running" and container.version != app.deployment_version:
                container.state = "draining"

    def stop(self, task_id: str) -> bool:
        for app in self._state.all_apps():
            for container in app.live_containers:
                if container.task_id == task_id:
                    container.state = "stopped"
                    container.stopped_at = self._now()
                    return True
        return False

    def stop_all(self, app: App) -> None:
        for container in app.live_containers:
            container.state = "stopped"
            container.stopped_at = self._now()

    def task_stats(self, environment: str, app_id: str) -> list[api_pb2.TaskStats]:
        """What `TaskList` answers: the containers that exist, of one app or of the environment."""
        return [
            api_pb2.TaskStats(
                task_id=container.task_id,
                app_id=app.id,
                app_description=app.name,
                started_at=container.enqueued_at,
                enqueued_at=container.enqueued_at,
            )
            for app in self._state.all_apps()
            if (app.id == app_id if app_id else app.environment == environment)
            for container in app.live_containers
        ]
