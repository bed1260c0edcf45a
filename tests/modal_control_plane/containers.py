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
- Scaledown: a running container with no request for its function's scaledown window (the definition's
  `autoscaler_settings.scaledown_window`, else `task_idle_timeout_secs`, else Modal's documented
  default of 60 s) is stopped; its life ends at its last request (its start, if it never had one)
  plus the window, and a later request cold-starts a new one. Modelled lazily on the plane's clock
  (`cp.now()`, which tests move: clock.py): every method here scales down first. A request is an
  instant here (no cold start, no time serving), so a container's life is a lower bound of Modal's.
  Draining containers are not scaled down (see above); `min_containers` is not modelled (no
  container starts at deploy, none is kept).
- Cost: containers ever started (per app, and the workspace's total, which outlives deleted
  environments) and GPU-seconds: per container, its function's GPU count (`resources.gpu_config`:
  "B200:8" is 8) times its life, up to now for one that still runs (state.Container.gpu_seconds).

Which requests get here at all is the edge's decision (edge.py): `web_function_at` finds the
endpoint without starting anything, `serve` is a request the edge let through. `for_web_request`
is both at once, for tests that play a request that got through.
"""

from __future__ import annotations

from collections.abc import Callable

from modal_proto import api_pb2

from .state import App, Container, ControlPlaneState, FunctionRecord

# Modal's default scaledown window when a function sets none (the client then sends 0):
# "By default, Modal containers spin down after 60 seconds of inactivity" (modal.com/docs/guide/cold-start).
DEFAULT_SCALEDOWN_WINDOW_SECONDS = 60.0


def function_definition(record: FunctionRecord) -> api_pb2.Function | None:
    """The function as FunctionCreate defined it (its first-ranked one: `gpu=[...]` sends a list)."""
    data = record.definition
    if data is None or not data.ranked_functions:
        return None
    return data.ranked_functions[0].function


def gpu_count(record: FunctionRecord) -> int:
    """GPUs per container: "B200:8" is 8, "B200" 1 (a type without a count), no GPU 0."""
    function = function_definition(record)
    if function is None:
        return 0
    gpu = function.resources.gpu_config
    return gpu.count or (1 if gpu.gpu_type or gpu.type else 0)


def scaledown_window(record: FunctionRecord) -> float:
    function = function_definition(record)
    if function is None:
        return DEFAULT_SCALEDOWN_WINDOW_SECONDS
    seconds = function.autoscaler_settings.scaledown_window or function.task_idle_timeout_secs
    return float(seconds) if seconds else DEFAULT_SCALEDOWN_WINDOW_SECONDS


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
            gpus=gpu_count(record),
            scaledown_window=scaledown_window(record),
        )
        app.containers.append(container)
        self._state.containers.append(container)
        return container

    def scale_down_idle(self) -> None:
        """Stop every running container idle past its scaledown window, as of its deadline."""
        now = self._now()
        for container in self._state.containers:
            if container.state != "running":
                continue
            deadline = max(container.enqueued_at, container.last_request_at) + container.scaledown_window
            if deadline <= now:
                container.state = "stopped"
                container.stopped_at = deadline

    def web_function_at(self, url: str) -> tuple[App, FunctionRecord] | None:
        """The deployed app and web function that serve `url` (its web URL, or below it); starts nothing."""
        self.scale_down_idle()
        return self._deployed_function_at(url)

    def serve(self, app: App, record: FunctionRecord) -> Container:
        """The container that takes a request the edge let through: a running one of the live
        version, else a new one (a cold start)."""
        self.scale_down_idle()
        container = next(
            (c for c in app.live_containers if c.state == "running" and c.function_id == record.id), None
        ) or self.start(app, record)
        container.requests += 1
        container.last_request_at = self._now()
        return container

    def for_web_request(self, url: str) -> Container | None:
        """`serve` for the endpoint at `url`, edge or not: what a request that got through reaches.
        None when no deployed app serves `url`."""
        found = self.web_function_at(url)
        return None if found is None else self.serve(*found)

    def started(self, app: App | None = None) -> int:
        """Containers ever started, of one app or of the whole workspace."""
        return len(self._state.containers if app is None else app.containers)

    def gpu_seconds(self, app: App | None = None) -> float:
        """GPU-seconds of the containers ever started, of one app or of the whole workspace, up to now."""
        self.scale_down_idle()
        now = self._now()
        return sum(c.gpu_seconds(now) for c in (self._state.containers if app is None else app.containers))

    def _deployed_function_at(self, url: str) -> tuple[App, FunctionRecord] | None:
        for app in self._state.all_apps():
            if app.state != "deployed":
                continue
            for record in app.functions.values():
                if record.web_url and (url == record.web_url or url.startswith(record.web_url.rstrip("/") + "/")):
                    return app, record
        return None

    def outdate(self, app: App) -> None:
        """The app has a new live version: its running containers of older versions drain (those
        idle past their window had scaled down before it)."""
        self.scale_down_idle()
        for container in app.containers:
            if container.state == "running" and container.version != app.deployment_version:
                container.state = "draining"

    def stop(self, task_id: str) -> bool:
        self.scale_down_idle()
        for app in self._state.all_apps():
            for container in app.live_containers:
                if container.task_id == task_id:
                    container.state = "stopped"
                    container.stopped_at = self._now()
                    return True
        return False

    def stop_all(self, app: App) -> None:
        self.scale_down_idle()
        for container in app.live_containers:
            container.state = "stopped"
            container.stopped_at = self._now()

    def task_stats(self, environment: str, app_id: str) -> list[api_pb2.TaskStats]:
        """What `TaskList` answers: the containers that exist, of one app or of the environment."""
        self.scale_down_idle()
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
