"""Bad input is rejected with a ValueError that names the offending parameter, and leaves the env usable."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.env_registry.exceptions import NameNotFound

import fedgames
from fedgames.envs.mean_estimation.mean_estimation import MeanEstimationEnv
from fedgames.mechanisms import BoundedAttack, NoisyResponse, RobustAggregation, SidePayment

N, D = 3, 2
K = D + 2  # action width


def make(mechanisms=(), **config):
    config = dict(n_players=N, dim=D) | config
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


def honest(env):
    width = env.action_space(env.possible_agents[0]).shape[0]
    return {a: np.zeros(width, dtype=np.float32) for a in env.agents}


def with_action(env, action, agent="player_1"):
    actions = honest(env)
    actions[agent] = action
    return actions


def action(alpha=0.0, beta=0.0, *bias):
    bias = list(bias) + [0.0] * (D - len(bias))
    return np.array([alpha, beta, *bias], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------------------------

BAD_ACTIONS = [
    pytest.param(action(np.nan), r"player_1.*alpha.*NaN", id="nan-alpha"),
    pytest.param(action(0.0, np.nan), r"player_1.*beta.*NaN", id="nan-beta"),
    pytest.param(action(0.0, 0.0, 0.0, np.inf), r"player_1.*b_2.*inf", id="inf-bias"),
    pytest.param(action(-np.inf), r"player_1.*alpha.*inf", id="minus-inf-alpha"),
    pytest.param(np.zeros(K - 1), rf"player_1.*shape \({K},\)", id="shape-d+1"),
    pytest.param(np.zeros((1, K)), rf"player_1.*shape \({K},\)", id="shape-1xd+2"),
    pytest.param(np.zeros(K + 1), rf"player_1.*shape \({K},\)", id="shape-d+3"),
    pytest.param(np.float32(0.0), rf"player_1.*shape \({K},\)", id="scalar"),
    pytest.param(np.array(["0"] * K), r"player_1.*(real|dtype)", id="str-dtype"),
    pytest.param(np.array([0.0] * K, dtype=object), r"player_1.*(real|dtype)", id="object-dtype"),
    pytest.param(np.zeros(K, dtype=complex), r"player_1.*(real|dtype)", id="complex-dtype"),
    pytest.param(action(5.0001), r"player_1.*alpha.*\[0, 5\]", id="alpha-above-alpha_max"),
    pytest.param(action(-0.1), r"player_1.*alpha", id="alpha-negative"),
    pytest.param(action(0.0, 1.01), r"player_1.*beta.*\[0, 1\]", id="beta-above-1"),
    pytest.param(action(0.0, -0.01), r"player_1.*beta", id="beta-negative"),
    pytest.param(action(0.0, 0.0, 1.5), r"player_1.*b_1.*\[-1, 1\]", id="bias-above"),
    pytest.param(action(0.0, 0.0, 0.0, -1.2), r"player_1.*b_2", id="bias-below"),
]


@pytest.mark.parametrize("bad, pattern", BAD_ACTIONS)
def test_bad_action_rejected(bad, pattern):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=pattern):
        env.step(with_action(env, bad))


@pytest.mark.parametrize("bad, pattern", BAD_ACTIONS)
def test_rejected_step_leaves_env_usable_and_rng_untouched(bad, pattern):
    """After a rejected step a valid step works, and gives exactly what it gives without the rejected one."""
    env, reference = make(["noisy_response:C=0.5"]), make(["noisy_response:C=0.5"])
    env.reset(seed=1)
    reference.reset(seed=1)
    with pytest.raises(ValueError):
        env.step(with_action(env, bad))
    assert env.agents == env.possible_agents
    good = with_action(env, action(1.0, 0.5, 0.2).astype(np.float32))
    _, r1, term, _, i1 = env.step(good)
    _, r2, _, _, i2 = reference.step(good)
    assert all(term.values())
    assert r1 == r2
    for a in env.possible_agents:
        np.testing.assert_array_equal(i1[a]["estimate"], i2[a]["estimate"])


def test_missing_agent():
    env = make()
    env.reset(seed=0)
    actions = honest(env)
    del actions["player_2"]
    with pytest.raises(ValueError, match=r"missing \['player_2'\]"):
        env.step(actions)
    env.step(honest(env))


def test_unknown_agent():
    env = make()
    env.reset(seed=0)
    actions = honest(env) | {"player_7": np.zeros(K, np.float32)}
    with pytest.raises(ValueError, match=r"unknown \['player_7'\]"):
        env.step(actions)
    env.step(honest(env))


@pytest.mark.parametrize("env_id", ["mean_estimation_v0", "fedsgd_v0", "participation_v0"])
@pytest.mark.parametrize("bad", [None, "list", "tuple"])
def test_actions_that_are_not_a_dict_are_refused(env_id, bad):
    """Audit of issue 17: ``step(None)`` was a TypeError about iterating None, a list of actions an ambiguous
    truth-value error; PettingZoo's parallel API takes ``{agent: action}``."""
    env = fedgames.make(env_id, **({"objective": "quadratic"} if env_id == "fedsgd_v0" else {}))
    env.reset(seed=0)
    rows = [env.action_space(a).sample() for a in env.possible_agents]
    actions = {"list": rows, "tuple": tuple(rows), None: None}[bad]
    with pytest.raises(ValueError, match=f"actions must be a dict {{agent: action}} .*got {type(actions).__name__}"):
        env.step(actions)
    env.step(dict(zip(env.possible_agents, rows)))  # still usable


@pytest.mark.parametrize("alpha", [1.6, 2.0, 5.0])
def test_alpha_above_bounded_attack(alpha):
    env = make(["bounded_attack:A=1.5", "side_payment:C=0.5"])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"player_1.*alpha.*\[0, 1.5\]"):
        env.step(with_action(env, action(alpha).astype(np.float32)))
    _, _, _, _, infos = env.step(with_action(env, action(1.5).astype(np.float32)))  # the bound itself is fine
    assert "payment" in infos["player_0"]


def test_float32_rounding_at_bounds_is_accepted_and_clipped():
    """Bounds that float32 cannot represent exactly (A = 0.1, bias_max = 0.7): the space's own float32 bounds are
    accepted, a component that rounding put past its bound is played as the bound itself (the same episode as
    the float64 action clipped to the exact bounds), and a value past float32 rounding (1e-4 relative) is
    refused."""
    env = make(["bounded_attack:A=0.1"], alpha_max=0.3, bias_max=0.7)
    exact_high, exact_low = np.array([0.1, 1.0, 0.7, 0.7]), np.array([0.0, 0.0, -0.7, -0.7])
    for side, exact in (("high", exact_high), ("low", exact_low)):
        bound = getattr(env.action_space("player_0"), side)
        assert bound.dtype == np.float32 and np.any(bound.astype(np.float64) != exact)  # rounding is there to test
        played = []
        for actions in (bound, np.clip(bound.astype(np.float64), exact_low, exact_high)):
            env.reset(seed=0)
            _, rewards, _, _, infos = env.step({a: actions.copy() for a in env.agents})
            played.append((list(rewards.values()), [infos[a]["message"] for a in env.possible_agents]))
        assert played[0][0] == played[1][0]
        np.testing.assert_array_equal(played[0][1], played[1][1])
    env.reset(seed=0)
    beyond = exact_high * np.array([1 + 1e-4, 1, 1, 1])
    with pytest.raises(ValueError, match=r"player_1.*alpha.*\[0, 0.1\]"):
        env.step(with_action(env, beyond))


def test_step_after_episode_end_raises_runtime_error():
    env = make()
    env.reset(seed=0)
    env.step(honest(env))
    with pytest.raises(RuntimeError, match="reset"):
        env.step({a: np.zeros(K, np.float32) for a in env.possible_agents})
    env.reset()
    env.step(honest(env))


def test_step_before_reset_raises_runtime_error():
    env = make(["side_payment:C=1"])
    with pytest.raises(RuntimeError, match=r"before reset\(\)"):
        env.step({a: np.zeros(K, np.float32) for a in env.possible_agents})


# ---------------------------------------------------------------------------------------------------------------
# Env config
# ---------------------------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    pytest.param(dict(n_players=1), "n_players", id="n_players=1"),
    pytest.param(dict(n_players=0), "n_players", id="n_players=0"),
    pytest.param(dict(n_players=2.5), "n_players", id="n_players=2.5"),
    pytest.param(dict(n_players=True), "n_players", id="n_players=True"),
    pytest.param(dict(n_players=-3), "n_players", id="n_players=-3"),
    pytest.param(dict(n_samples=0), "n_samples", id="n_samples=0"),
    pytest.param(dict(dim=0), "dim", id="dim=0"),
    pytest.param(dict(sigma=-1.0), "sigma", id="sigma<0"),
    pytest.param(dict(sigma=0.0), "sigma", id="sigma=0"),
    pytest.param(dict(sigma=float("nan")), "sigma", id="sigma=nan"),
    pytest.param(dict(sigma=[1.0, 0.0, 1.0]), r"sigma\[1\]", id="sigma-entry-0"),
    pytest.param(dict(sigma_star=-0.5), "sigma_star", id="sigma_star<0"),
    pytest.param(dict(lam=[1.0, 1.0]), "lam", id="lam-short"),
    pytest.param(dict(lam=[1.0, 1.0, 1.0, 1.0]), "lam", id="lam-long"),
    pytest.param(dict(lam=[1.0, -0.5, 1.0]), r"lam\[1\]", id="lam-negative-entry"),
    pytest.param(dict(lam=-1.0), "lam", id="lam-negative"),
    pytest.param(dict(alpha_max=0.0), "alpha_max", id="alpha_max=0"),
    pytest.param(dict(alpha_max=-1.0), "alpha_max", id="alpha_max<0"),
    pytest.param(dict(alpha_max=float("inf")), "alpha_max", id="alpha_max=inf"),
    pytest.param(dict(bias_max=-0.1), "bias_max", id="bias_max<0"),
]


@pytest.mark.parametrize("config, name", BAD_CONFIGS)
def test_bad_config(config, name):
    with pytest.raises(ValueError, match=name):
        MeanEstimationEnv(**(dict(n_players=N, dim=D) | config))
    with pytest.raises(ValueError, match=name):
        make(**config)


# ---------------------------------------------------------------------------------------------------------------
# Mechanism specs
# ---------------------------------------------------------------------------------------------------------------

BAD_SPECS = [
    pytest.param(
        ["side_paymnet:C=0.4"],
        r"unknown mechanism 'side_paymnet'.*did you mean 'side_payment'",
        id="mechanism-near-miss",
    ),
    pytest.param(["noisy_respons:C=0.4"], r"did you mean 'noisy_response'", id="mechanism-near-miss-2"),
    pytest.param(["side_payment:C=0.4,balancd=true"], r"'balancd'.*did you mean 'balanced'", id="param-near-miss"),
    pytest.param(["side_payment:c=0.4"], r"unknown parameter 'c'; did you mean 'C'", id="param-case"),
    pytest.param(
        [("side_payment", {"C": 0.4, "balnced": True})],
        r"'balnced'.*did you mean 'balanced'",
        id="param-near-miss-pair",
    ),
    pytest.param(["side_payment"], r"side_payment.*\['C'\]", id="missing-C"),
    pytest.param(["noisy_response"], r"noisy_response.*\['C'\]", id="missing-C-noisy"),
    pytest.param(["bounded_attack"], r"bounded_attack.*\['A'\]", id="missing-A"),
    pytest.param(["side_payment:C=-0.1"], r"side_payment.*C", id="negative-C"),
    pytest.param(["noisy_response:C=-1"], r"noisy_response.*C", id="negative-C-noisy"),
    pytest.param(["noisy_response:C=1e100"], r"noisy_response: C .*\[0, 1e\+15\], got 1e\+100", id="huge-C-noisy"),
    pytest.param(["side_payment:C=nan"], r"side_payment.*C", id="nan-C"),
    pytest.param(["side_payment:C=1,balanced=yes"], r"balanced", id="balanced-not-bool"),
    pytest.param(["bounded_attack:A=5.5"], r"bounded_attack.*A.*\[0, 5\]", id="A-above-alpha_max"),
    pytest.param(["bounded_attack:A=-0.5"], r"bounded_attack.*A", id="A-negative"),
    pytest.param(["bounded_attack:A=1,component=alhpa"], r"alhpa", id="component-unknown"),
    pytest.param(
        ["robust_aggregation:rule=medain"], r"unknown rule 'medain'.*did you mean 'median'", id="rule-near-miss"
    ),
    pytest.param(["robust_aggregation:rule=krum,f=1,q=2"], r"unknown parameter 'q'", id="rule-unknown-param"),
    pytest.param(["robust_aggregation:rule=krum,ff=1"], r"'ff'.*did you mean 'f'", id="rule-param-near-miss"),
    pytest.param(["robust_aggregation:rule=median,f=1"], r"unknown parameter 'f'", id="median-takes-no-f"),
    pytest.param(["robust_aggregation:rule=trimmed_mean,f=2"], r"\bf\b", id="trimmed-mean-f-too-big"),
    pytest.param(["side_payment:C"], r"side_payment:C.*key=value", id="malformed-spec"),
    pytest.param(["side_payment:=1"], r"key=value", id="malformed-spec-no-key"),
]


@pytest.mark.parametrize("specs, pattern", BAD_SPECS)
def test_bad_mechanism_spec(specs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(specs, n_players=4)


def test_no_mechanisms_may_be_none():
    assert fedgames.make("mean_estimation_v0", mechanisms=None).protocol.mechanisms == ()


def test_a_single_mechanism_spec_must_come_in_a_list():
    with pytest.raises(ValueError, match=r"must be a list of specs.*write \['side_payment:C=0.4'\]"):
        fedgames.make("mean_estimation_v0", mechanisms="side_payment:C=0.4")


@pytest.mark.parametrize(
    "spec, name", [("side_payment:C=abc", "C"), ("noisy_response:C=abc", "C"), ("bounded_attack:A=abc", "A")]
)
def test_non_numeric_mechanism_value_names_parameter(spec, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        make([spec])


@pytest.mark.parametrize(
    "spec, name", [("robust_aggregation:rule=krum", "f"), ("robust_aggregation:rule=multi_krum,f=1", "m")]
)
def test_missing_rule_parameter(spec, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        make([spec], n_players=6)


@pytest.mark.parametrize(
    "spec, suggestion",
    [
        ("robust_aggregation:rule=median,clip_nrom=1", "clip_norm"),
        ("robust_aggregation:rule=median,mixing=1", "mixing_f"),
    ],
)
def test_robust_aggregation_own_parameter_near_miss(spec, suggestion):
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'"):
        make([spec], n_players=6)


def test_robust_aggregation_pre_aggregation_parameters_validated():
    """The pre-aggregation steps' errors name the mechanism's own parameters (``clip_norm``, ``mixing_f``), not the
    aggregator functions' (``tau``, ``f``)."""
    with pytest.raises(ValueError, match=r"^robust_aggregation: clip_norm must be a finite number > 0, got -1"):
        make(["robust_aggregation:rule=median,clip_norm=-1"], n_players=6)
    with pytest.raises(ValueError, match=r"^robust_aggregation: mixing_f must be in \[0, 5\] \(fewer than the 6"):
        make(["robust_aggregation:rule=median,mixing_f=9"], n_players=6)
    for bad in ("-1", "x", "0.0"):
        with pytest.raises(ValueError, match=r"^robust_aggregation: mixing_f must be an integer >= 0, got"):
            make([f"robust_aggregation:rule=median,mixing_f={bad}"], n_players=6)
    assert make(["robust_aggregation:rule=median,mixing_f=5,clip_norm=0.5"], n_players=6).spec()
    with pytest.raises(ValueError, match=r"\bf\b.*integer"):
        make(["robust_aggregation:rule=krum,f=1.5"], n_players=6)


def test_krum_impossible_f_raised_at_wrap_time():
    # Krum needs N > 2f + 2: N = 4, f = 1 is impossible, N = 5 is fine
    with pytest.raises(ValueError, match=r"\bf=1\b.*n_players"):
        make(["robust_aggregation:rule=krum,f=1"], n_players=4)
    env = make(n_players=4)
    with pytest.raises(ValueError, match=r"\bf\b"):
        RobustAggregation(env, rule="krum", f=1)
    with pytest.raises(ValueError, match=r"\bf\b"):
        RobustAggregation(env, rule="multi_krum", f=1, m=2)
    make(["robust_aggregation:rule=krum,f=1"], n_players=5)


def test_mechanism_constructors_validate_directly():
    env = make()
    with pytest.raises(ValueError, match="C"):
        SidePayment(env, C=-1)
    with pytest.raises(ValueError, match="C"):
        NoisyResponse(env, C=float("inf"))
    with pytest.raises(ValueError, match="A"):
        BoundedAttack(env, A=6.0)
    with pytest.raises(ValueError, match="A"):
        BoundedAttack(env, A=float("nan"))
    # A bound outside an inner bound: A must lie within the already bounded range
    with pytest.raises(ValueError, match=r"A must lie in \[0, 1.5\]"):
        BoundedAttack(BoundedAttack(env, A=1.5), A=2.0)


def test_bounded_attack_A_respects_custom_alpha_max():
    make(["bounded_attack:A=10"], alpha_max=10.0)
    with pytest.raises(ValueError, match=r"A must lie in \[0, 2\]"):
        make(["bounded_attack:A=3"], alpha_max=2.0)


def test_bounded_attack_at_negative_zero_is_the_point_zero():
    """``A = -0.0`` equals the lower bound 0: the space is ``alpha = 0`` (its high ``+0.0``), and it samples (a
    ``-0.0`` high made Gymnasium's sampler fail with ``high - low < 0``)."""
    space = make([("bounded_attack", {"A": -0.0})]).action_space("player_0")
    space.seed(0)
    assert space.high[0] == 0.0 and not np.signbit(space.high[0]) and space.sample()[0] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Env ids
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, suggested",
    [
        ("mean_estimaton_v0", "mean_estimation_v0"),
        ("fedgames/mean_estimaton-v0", "fedgames/mean_estimation-v0"),
        ("mean_estimation_v9", "mean_estimation_v0"),
    ],
)
def test_unknown_env_id_suggests_close_match_in_the_callers_spelling(env_id, suggested):
    listed = rf"registered: \[[^]]*'{suggested}'"
    with pytest.raises(ValueError, match=rf"unknown env .*did you mean '{suggested}'.*{listed}"):
        fedgames.make(env_id)
    with pytest.raises(NameNotFound):  # what pettingzoo.make raises, for code written against it
        fedgames.make(env_id)
