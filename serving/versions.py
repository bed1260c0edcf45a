"""Pinned versions shared by the serving image, the offline checks and the setup script.

The serve image tag and the SGLang release the tests parse commands with must be the same
release: a command accepted by one version's parser can be rejected by another's at cold start.
"""

SGLANG_VERSION = "0.5.23"
