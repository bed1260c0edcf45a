"""The Pulumi program of the GLM-5.1-FP8 deployment on Modal (stacks: staging, prod).

`pulumi preview` / `pulumi up` run this file as `__main__` (Pulumi.yaml: `main: infra/`):

1. read and validate the stack's config (infra/settings.py): a bad stack file fails here, before
   any resource is registered, with every problem named and no stack trace;
2. declare the resources in dependency order (infra/resources.py): Modal environment, secrets and
   volumes, then the download -> compile -> verify jobs, then the app deployment, then the optional
   smoke test (infra/smoke.py);
3. export the API's base URL, ids, names and smoke-test snippets (infra/exports.py);
4. in a preview, say what the `up` would run on Modal and what it costs (infra/cost_preview.py).

A production stack whose model revision is a branch gets a warning saying how to pin it
(infra/revision_pin.py), and a stack that serves without proxy auth one saying what that costs
(infra/edge.py).

Before all of it, every message the program logs is set to be redacted of the stack's secret values
(infra/messages.py), which step 1 registers before it builds any.
"""

from infra import cost_preview, edge, exports, messages, resources, revision_pin, settings

messages.redact_program_log()
stack_settings = settings.load()
revision_pin.warn_if_unpinned(stack_settings)
edge.warn_if_open(stack_settings)
stack_resources = resources.declare(stack_settings)
exports.export_all(stack_settings, stack_resources)
cost_preview.declare_cost_preview(stack_settings, stack_resources)
