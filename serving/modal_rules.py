"""Modal's rules for the names we hand it, in one place: the config model (serving/config.py, which the
container also runs) and the Pulumi providers (providers/base.py) both check names with these
functions, so `pulumi preview` and `python -m serving.render` refuse what Modal would refuse, without
asking Modal.

The rules are modal 1.6.4's own (`modal/_utils/name_utils.py`: `is_valid_object_name`,
`is_valid_environment_name`, `is_valid_tag`), with one difference on purpose: they are matched on the WHOLE string.
Modal's `re.match("...$")` lets a name with a trailing newline through, which would then reach a log
line or a command as a second line. tests/serving/test_modal_rules.py compares both on many names.
This module knows Modal only, nothing of what we deploy (the providers import it).
"""

from __future__ import annotations

import re

# At most 64 characters: letters, digits, '-', '_', '.'. Not an app id, which Modal would take for one.
OBJECT_NAME_MAX_LENGTH = 64
_OBJECT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_APP_ID = re.compile(r"ap-[A-Za-z0-9]{22}")

# Environments: the same length, a letter or digit first, no '.' (Modal refuses it in new names), and
# not "en-..." (Modal resolves that prefix as an environment id).
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# What a secret's keys and a module's environment become inside the container: POSIX variable names.
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A deployment's tag (`App.deploy(tag=...)`, shown by `modal app history`): at most 50 of the same
# characters as an object name. Empty means "no tag".
_DEPLOYMENT_TAG = re.compile(r"[A-Za-z0-9._-]{1,50}")

OBJECT_NAME_RULE = "1-64 characters of letters, digits, '-', '_' or '.', and not an app id (ap-...)"
ENVIRONMENT_NAME_RULE = "1-64 characters of letters, digits, '-' or '_', a letter or digit first, not 'en-...'"
ENV_VAR_NAME_RULE = "letters, digits and '_', not starting with a digit"
DEPLOYMENT_TAG_RULE = "1-50 characters of letters, digits, '-', '_' or '.'"


def is_object_name(name: str) -> bool:
    """A valid name for a Modal secret, volume or app."""
    return _OBJECT_NAME.fullmatch(name) is not None and _APP_ID.fullmatch(name) is None


def is_environment_name(name: str) -> bool:
    return _ENVIRONMENT_NAME.fullmatch(name) is not None and not name.lower().startswith("en-")


def is_env_var_name(name: str) -> bool:
    return _ENV_VAR_NAME.fullmatch(name) is not None


def is_deployment_tag(tag: str) -> bool:
    return _DEPLOYMENT_TAG.fullmatch(tag) is not None


def check_object_name(name: str) -> str:
    if not is_object_name(name):
        raise ValueError(f"{name!r} is not a valid Modal object name: {OBJECT_NAME_RULE}")
    return name


def check_environment_name(name: str) -> str:
    if not is_environment_name(name):
        raise ValueError(f"{name!r} is not a valid Modal environment name: {ENVIRONMENT_NAME_RULE}")
    return name


def check_env_var_name(name: str) -> str:
    if not is_env_var_name(name):
        raise ValueError(f"{name!r} is not an environment variable name: {ENV_VAR_NAME_RULE}")
    return name


def check_deployment_tag(tag: str) -> str:
    """A deployment tag, or "" for none."""
    if tag and not is_deployment_tag(tag):
        raise ValueError(f"{tag!r} is not a valid Modal deployment tag: {DEPLOYMENT_TAG_RULE}")
    return tag
