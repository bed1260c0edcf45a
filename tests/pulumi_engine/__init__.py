"""A test-side Pulumi engine for dynamic providers, driving the REAL dynamic-provider gRPC server.

- provider_server.ProviderServer: starts `python -u -m pulumi.dynamic` like the engine's shim and
  calls Check/Diff/Create/Read/Update/Delete/Configure with plain dicts; captures stdout/stderr.
- engine.Engine: preview / up / refresh / destroy over a persisted State, returning a
  DeploymentResult (steps, engine-visible outputs with secrets marked, gRPC calls, provider output).
- mocks_bridge.run_program: runs a real Pulumi program under `pulumi.runtime.set_mocks` with its
  dynamic resources sent through the Engine (and `desired_from_mock_args` for plain mocks).
- properties: wire-form values (secret markers, unknowns) and the engine's secret bookkeeping.

Each module's docstring lists the engine behaviours it reproduces, with the pulumi/pulumi source
files they were read from.
"""
