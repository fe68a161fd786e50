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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", "alpha=1;alpha=2"], "--profile: alpha is given twice (1 and 2); give it once"),
        (["-m", "side_payment:C=1,C=2"], "mechanism spec 'side_payment:C=1,C=2': C is given twice (1 and 2)"),
        (["-e", "n_players=3", "-e", "n_players=4"], "-e/--env-config: n_players is given twice (3 and 4)"),
        (["--profile", "PROFILE"], "the key(s) ['alpha'] are given twice in one object"),
    ],
)
def test_a_key_given_twice_is_refused(tmp_path, capsys, argv, message):
    """Audit of issue 17: the last of two values silently won, in a profile, a mechanism spec, the env config and a
    JSON profile alike (the family of the misspelt key)."""
    from fedgames.cli import main

    profile = tmp_path / "profile.json"
    profile.write_text('{"alpha": 1, "alpha": 2}')
    argv = [str(profile) if a == "PROFILE" else a for a in argv]
    assert main(["simulate", "mean_estimation_v0", *argv, "--no-plot", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedgames: error: ") and message in err[0]
    with pytest.raises(ValueError, match="tau is given twice"):
        fedgames.make("fedsgd_v0", objective="quadratic", byzantine={"player_1": "alie:tau=1,tau=2"})
