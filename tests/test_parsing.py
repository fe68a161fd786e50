"""Command-line ``key=value`` parsing."""

from __future__ import annotations

import pytest

import fedgames
from fedgames.parsing import parse_assignment, parse_value


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("3", 3),
        ("0.5", 0.5),
        ("none", None),
        ("1,2", [1, 2]),
        ("decaying", "decaying"),
        ('{"player_1": "sign_flip", "player_3": "alie:tau=-1"}', {"player_1": "sign_flip", "player_3": "alie:tau=-1"}),
        ("[1, 2.5]", [1, 2.5]),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_json_values_reach_the_env_config():
    """``-e byzantine={...}``: the README's fedsgd_v0 ``byzantine`` config from the command line."""
    assert parse_assignment('byzantine={"player_1": "sign_flip"}', "-e") == ("byzantine", {"player_1": "sign_flip"})


def test_broken_json_is_an_error_saying_so():
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_value('{"player_1":')


def test_broken_json_in_an_assignment_names_the_key_and_the_option():
    with pytest.raises(ValueError, match=r"^-e: byzantine: .*not valid JSON"):
        parse_assignment('byzantine={"player_1":', "-e")
    with pytest.raises(
        ValueError, match=r"mechanism spec 'robust_aggregation:rule=\[median\]': rule: .*not valid JSON"
    ):
        fedgames.make("mean_estimation_v0", mechanisms=["robust_aggregation:rule=[median]"])
