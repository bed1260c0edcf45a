"""A test-side Pulumi engine for dynamic providers, driving the REAL dynamic-provider gRPC server.

Why it stays beside the real CLI (tests/stack/ runs every stack flow through `pulumi` itself): it
is the fastest honest way to put ONE provider through many cases and injected faults (a Modal call
failing mid-create, a retry, a check of each property), milliseconds per call instead of a CLI run
per case, with the provider in its own `python -m pulumi.dynamic` process as the engine starts it.
tests/providers/ uses it; nothing here runs a Pulumi program any more.

- provider_server.ProviderServer: starts `python -u -m pulumi.dynamic` like the engine's shim and
  calls Check/Diff/Create/Read/Update/Delete/Configure with plain dicts; captures stdout/stderr.
- engine.Engine: preview / up / refresh / destroy over a persisted State, returning a
  DeploymentResult (steps, engine-visible outputs with secrets marked, gRPC calls, provider output).
- properties: wire-form values (secret markers, unknowns) and the engine's secret bookkeeping.

Each module's docstring lists the engine behaviours it reproduces, with the pulumi/pulumi source
files they were read from.
"""
