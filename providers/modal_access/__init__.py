"""The layer of providers/ that talks to Modal: the retried calls (retry.py), look-ups of objects
(lookups.py), deployments and rollovers (deployments.py), function calls looked at and stopped
(function_calls.py); the private client APIs all of it needs stay behind providers/modal_internals.py
(its path is the project's rule). Imports only providers/shared/ below it."""
