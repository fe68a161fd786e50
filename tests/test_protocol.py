"""The protocol's own stages (``fedgames.envs.protocol``, SPEC §4): the weighted mean, the payment stage's
``present`` players and the action check's boundaries and messages. Written to kill the mutants that the env tests
left alive (docs/testing.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fedgames.envs.protocol import Protocol, ServerRound, mean_aggregate

NAMES = ("alpha", "beta")
LOW, HIGH = np.array([0.0, -2.0]), np.array([1.0, 3.0])


def protocol(**stages):
    return Protocol(NAMES, LOW, HIGH, **stages)


def test_weighted_mean_is_the_weighted_average_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    messages, weights = rng.normal(size=(4, 5, 3)), rng.uniform(0.5, 3.0, size=(4, 5))
    expected = np.stack([np.average(messages[b], axis=0, weights=weights[b]) for b in range(4)])
    np.testing.assert_allclose(mean_aggregate(messages, weights), expected, rtol=1e-12)
    np.testing.assert_allclose(mean_aggregate(messages), messages.mean(axis=1), rtol=1e-12)
    got = mean_aggregate(torch.from_numpy(messages), torch.from_numpy(weights))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_payments_pass_present_to_rules_that_take_deviations():
    """A rule with ``from_deviation`` gets the deviations and, when the game says who takes part, ``present``; a
    plain rule gets the messages; the payments of all rules add up."""
    seen = {}

    class ByDeviation:
        def __call__(self, messages, aggregate):
            raise AssertionError("the deviations were known")

        def from_deviation(self, sq_deviation, present=None):
            seen["present"] = present
            return 2.0 * sq_deviation

    def flat(messages, aggregate):
        return np.ones(messages.shape[:2])

    p = protocol(payment_rules=(ByDeviation(), flat))
    messages, aggregate = np.zeros((1, 3, 2)), np.zeros((1, 2))
    sq = np.array([[1.0, 2.0, 3.0]])
    present = np.array([[True, False, True]])
    np.testing.assert_array_equal(p.payments(messages, aggregate, sq, present), [[3.0, 5.0, 7.0]])
    assert seen["present"] is present
    np.testing.assert_array_equal(p.payments(messages, aggregate, sq), [[3.0, 5.0, 7.0]])
    assert seen["present"] is None
    assert protocol().payments(messages, aggregate, sq, present) is None


def test_protocol_and_server_round_are_immutable():
    p = protocol()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.aggregate = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerRound(np.zeros((1, 2)), np.zeros((1, 3, 2)), None).payments = None  # type: ignore[misc]


def test_integer_actions_are_accepted_as_float64():
    out = protocol().check_actions(np.array([[[1, 3], [0, -2]]]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[[1.0, 3.0], [0.0, -2.0]]])


def test_action_slack_is_one_millionth_of_one_plus_the_largest_bound():
    """The slack is ``1e-6 (1 + max(|low|, |high|))``: for alpha in [0, 1] it is 2e-6 (1.9e-6 past the top is
    accepted and clipped, 2.1e-6 refused); for beta in [-2, 3] it is 4e-6."""
    p = protocol()
    for comp, top, slack in ((0, 1.0, 2e-6), (1, 3.0, 4e-6)):
        actions = np.zeros((1, 2, 2))
        actions[0, 1, comp] = top + 0.95 * slack
        assert p.check_actions(actions)[0, 1, comp] == top
        actions[0, 1, comp] = top + 1.05 * slack
        with pytest.raises(ValueError, match=rf"player_1: {NAMES[comp]}="):
            p.check_actions(actions)


def test_action_errors_name_the_first_bad_entry():
    """With several bad entries the message names the first (batch, player, component) in order, with its value;
    without agent names, players are named by their index (more players than components)."""
    p = protocol()
    actions = np.zeros((2, 6, 2))
    actions[0, 4, 1], actions[1, 5, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"action of player_4: beta is nan \(NaN/inf\)"):
        p.check_actions(actions)
    actions = np.zeros((2, 6, 2))
    actions[0, 5, 0], actions[1, 1, 1] = 7.0, -9.0
    with pytest.raises(ValueError, match=r"action of player_5: alpha=7 is outside its allowed range \[0, 1\]"):
        p.check_actions(actions)
    names = [f"client_{i}" for i in range(6)]
    with pytest.raises(ValueError, match=r"action of client_5: alpha=7"):
        p.check_actions(actions, names)


@pytest.mark.parametrize("shape", [(1, 2, 3), (1, 2, 1), (2, 2), (1, 1, 2, 2)])
def test_actions_of_the_wrong_shape_are_refused_by_name(shape):
    with pytest.raises(ValueError, match=r"actions must have shape \(batch, n_players, 2\)"):
        protocol().check_actions(np.zeros(shape))


def test_balanced_side_payment_shares_among_the_players_present_only():
    """``p'_i = p_i - (1/(|P|-1)) sum_{j in P, j != i} p_j`` over the present players (SPEC §3's side payment),
    by hand; one player alone keeps its plain payment."""
    from fedgames.mechanisms.side_payment import payments_from_deviation

    sq = np.array([[1.0, 2.0, 3.0, 4.0]])
    present = np.array([[True, False, True, True]])
    shared = payments_from_deviation(sq, 0.5, True, present)  # plain 0.5, 0, 1.5, 2 over |P| - 1 = 2 others
    np.testing.assert_allclose(shared, [[0.5 - 3.5 / 2, 0.0, 1.5 - 2.5 / 2, 2.0 - 2.0 / 2]], rtol=1e-12)
    np.testing.assert_allclose(payments_from_deviation(sq, 0.5, False, present), [[0.5, 0.0, 1.5, 2.0]])
    alone = payments_from_deviation(sq, 0.5, True, np.array([[False, False, True, False]]))
    np.testing.assert_array_equal(alone, [[0.0, 0.0, 1.5, 0.0]])
