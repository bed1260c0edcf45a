"""Our naming rules are modal 1.6.4's own (modal/_utils/name_utils.py), matched on the whole string."""

from __future__ import annotations

import random
import string

import pytest
from modal._utils import name_utils

from serving.modal_rules import (
    check_deployment_tag,
    check_env_var_name,
    check_environment_name,
    check_object_name,
    is_deployment_tag,
    is_env_var_name,
    is_environment_name,
    is_object_name,
)

EDGE_NAMES = [
    "a", "glm51-model-weights", "glm.5_1-x", "-leading-dash", ".leading-dot", "_x", "x" * 64, "x" * 65,
    "has space", "slash/name", "ap-" + "a" * 22, "ap-" + "a" * 21, "en-prod", "EN-prod", "prod.env", "café",
    "", "tab\tname",
]  # fmt: skip


def random_names(count: int = 1000) -> list[str]:
    rng = random.Random(20261129)
    alphabet = string.ascii_letters + string.digits + "-_." + " /:é"
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 2, 3, 8, 40, 63, 64, 65])))
        for _ in range(count)
    ]


@pytest.mark.parametrize("name", EDGE_NAMES + random_names())
def test_object_and_environment_names_follow_modal(name: str) -> None:
    assert is_object_name(name) == name_utils.is_valid_object_name(name)
    assert is_environment_name(name) == name_utils.is_valid_environment_name(name, allow_periods=False)
    assert is_deployment_tag(name) == name_utils.is_valid_tag(name)


@pytest.mark.parametrize("name", ["glm51-api-key\n", "prod\n"])
def test_a_trailing_newline_is_refused_where_modal_would_let_it_through(name: str) -> None:
    # Modal's `re.match("...$")` accepts it; a newline in a name would become a second log/argv line.
    assert name_utils.is_valid_object_name(name) and not is_object_name(name)
    assert not is_environment_name(name)


def test_environment_variable_names() -> None:
    assert all(is_env_var_name(n) for n in ("HF_TOKEN", "API_KEY", "_x", "mixedCase1"))
    assert not any(is_env_var_name(n) for n in ("1X", "HF-TOKEN", "A B", "", "X\n"))


def test_errors_name_the_value_and_the_rule() -> None:
    for check, value, words in ((check_object_name, "bad name!", "Modal object name"),
                                (check_environment_name, "en-prod", "Modal environment name"),
                                (check_env_var_name, "hf-token", "environment variable name"),
                                (check_deployment_tag, "v1 final", "Modal deployment tag")):  # fmt: skip
        with pytest.raises(ValueError, match=words) as error:
            check(value)
        assert repr(value) in str(error.value)


def test_an_empty_deployment_tag_means_none() -> None:
    assert check_deployment_tag("") == ""
