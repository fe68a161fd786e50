"""Monte Carlo agreement of the mean-estimation closed forms with the simulator (SPEC §1).

For each case the batched game (``env.unwrapped.game.play(env.protocol, ...)``, the very stages the PettingZoo env
runs) plays ``B`` independent episodes of one fixed profile. Per player, the sample means of ``sq_error``,
``rewards`` and ``payments`` must agree with :mod:`fedgames.envs.mean_estimation.theory` within 4 standard errors,
the standard errors being estimated from the same samples (``std(ddof=1) / sqrt(B)``); no hand-picked tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import fedgames
from fedgames.envs.mean_estimation.theory import (
    Profile,
    Setting,
    bounded_equilibrium,
    expected_mse,
    expected_payment,
    expected_reward,
)

B = 200_000
Z_MAX = 4.0


# ---------------------------------------------------------------------------------------------------------------
# helpers


def make_env(mechanisms: list[str] | tuple[str, ...] = (), **config: Any):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


def play(env, profile: Profile, batch: int, seed: int):
    """Play ``batch`` episodes of the fixed ``profile`` through the outermost protocol (batched path)."""
    game = env.unwrapped.game
    rng = np.random.default_rng(seed)
    world = game.sample_world(rng, batch)
    actions = np.broadcast_to(profile.actions(), (batch,) + profile.actions().shape)
    return game.play(env.protocol, world, actions, rng)


def assert_mc_agrees(samples: np.ndarray, expected: np.ndarray | float, what: str) -> None:
    """Per column (player) of ``samples`` ``(B, N)``: ``|mean - expected| < 4 SE`` with the sample SE. A column
    that is constant up to floating-point rounding (e.g. a reward that is 0 in every episode) has no sampling error
    to compare with: it must equal the closed form to rounding."""
    samples = np.asarray(samples, dtype=float)
    expected = np.broadcast_to(np.asarray(expected, dtype=float), samples.shape[1:])
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    rounding = 1e-12 * max(1.0, float(np.abs(samples).max()))
    constant = se <= rounding
    assert np.all(np.abs(mean - expected)[constant] <= 1e3 * rounding), (
        f"{what}: constant column(s) {np.flatnonzero(constant).tolist()} differ from theory: {mean} vs {expected}"
    )
    se = np.where(constant, np.inf, se)
    z = (mean - expected) / se
    bad = np.abs(z) >= Z_MAX
    assert not bad.any(), (
        f"{what}: Monte Carlo disagrees with theory for player(s) {np.flatnonzero(bad).tolist()}\n"
        f"  MC mean  {np.array2string(mean, precision=6)}\n"
        f"  theory   {np.array2string(expected, precision=6)}\n"
        f"  SE       {np.array2string(se, precision=3)}\n"
        f"  z        {np.array2string(z, precision=2)}"
    )


def random_profile(n_players: int, dim: int, seed: int, alpha_max: float = 2.0, bias_max: float = 0.6) -> Profile:
    rng = np.random.default_rng(seed)
    return Profile(
        alpha=rng.uniform(0.0, alpha_max, n_players),
        beta=rng.uniform(0.0, 1.0, n_players),
        bias=rng.uniform(-bias_max, bias_max, (n_players, dim)),
    )


# ---------------------------------------------------------------------------------------------------------------
# cases: a config, a mechanism stack, and a profile (built from the setting when it needs nu or C)


@dataclass
class Case:
    id: str
    config: dict[str, Any]
    mechanisms: tuple[str, ...] = ()
    profile: Callable[[Setting, dict[str, Any]], Profile] = field(default=lambda s, c: None)  # type: ignore[assignment]
    seed: int = 0


def _fixed(alpha, beta, bias) -> Callable[[Setting, dict[str, Any]], Profile]:
    return lambda s, c: Profile(np.array(alpha, float), np.array(beta, float), np.array(bias, float))


def _random(seed: int, **kwargs: float) -> Callable[[Setting, dict[str, Any]], Profile]:
    return lambda s, c: random_profile(c["n_players"], c["dim"], seed, **kwargs)


def _noisy_honest(C: float) -> Callable[[Setting, dict[str, Any]], Profile]:
    return lambda s, c: Profile.symmetric(c["n_players"], c["dim"], alpha=0.0, beta=C / (C + 1))


def _bounded_eq(A: float) -> Callable[[Setting, dict[str, Any]], Profile]:
    return lambda s, c: bounded_equilibrium(A, float(s.nu[0]), c["n_players"], c["dim"])[0]


def _mixed_noisy_honest(C: float, seed: int) -> Callable[[Setting, dict[str, Any]], Profile]:
    """Player 0 attacks with alpha, bias and its own beta; the others play Thm 5.1's honest strategy."""

    def build(s: Setting, c: dict[str, Any]) -> Profile:
        n, d = c["n_players"], c["dim"]
        p = Profile.symmetric(n, d, alpha=0.0, beta=C / (C + 1))
        bias = np.random.default_rng(seed).uniform(-0.5, 0.5, d)
        return p.replace_player(0, alpha=1.3, beta=0.55, bias=bias)

    return build


N2 = dict(n_players=2, dim=3, sigma=1.2, sigma_star=0.4, lam=[0.7, 1.5], n_samples=4)
N3 = dict(n_players=3, dim=2, sigma=1.0, sigma_star=0.5, lam=[0.5, 1.0, 2.0], n_samples=10)
N7 = dict(n_players=7, dim=4, sigma=0.8, sigma_star=0.3, lam=[0.2, 0.5, 1.0, 1.0, 1.5, 2.0, 3.0], n_samples=6)
HET3 = dict(n_players=3, dim=2, sigma=[0.5, 1.0, 2.0], sigma_star=0.3, sigma_cv=0.5, lam=[1.0, 0.5, 2.0], n_samples=5)
HET7 = dict(
    n_players=7,
    dim=3,
    sigma=[0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0],
    sigma_star=0.2,
    sigma_cv=0.8,
    lam=[1.0, 0.3, 0.6, 1.2, 2.0, 0.8, 1.5],
    n_samples=3,
)

CASES = [
    # no mechanism
    Case("plain_game/N2", N2, (), _fixed([0.8, 0.3], [0.2, 0.6], [[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]]), seed=1),
    Case(
        "plain_game/N3",
        N3,
        (),
        _fixed([0.0, 1.2, 0.5], [0.1, 0.4, 0.9], [[0.2, -0.1], [-0.4, 0.3], [0.0, 0.6]]),
        seed=2,
    ),
    Case("plain_game/N7", N7, (), _random(7), seed=3),
    Case("plain_game/N3_honest", N3, (), lambda s, c: Profile.symmetric(3, 2), seed=4),
    Case("plain_game/hetero_N3", HET3, (), _random(11), seed=5),
    Case("plain_game/hetero_N7", HET7, (), _random(12), seed=6),
    Case("mean_aggregation_rule/N3", N3, ("robust_aggregation:rule=mean",), _random(13), seed=7),
    # side payments
    Case("plain_payment/N3", N3, ("side_payment:C=0.3",), _random(21), seed=21),
    Case("plain_payment/N7", N7, ("side_payment:C=0.05",), _random(22), seed=22),
    Case("plain_payment/N2", N2, ("side_payment:C=1.1",), _random(23), seed=23),
    Case("balanced_payment/N3", N3, ("side_payment:C=0.3,balanced=true",), _random(24), seed=24),
    Case("balanced_payment/N7", N7, ("side_payment:C=0.05,balanced=true",), _random(25), seed=25),
    Case("balanced_payment/hetero_N3", HET3, ("side_payment:C=0.4,balanced=true",), _random(26), seed=26),
    Case(
        "plain+balanced_payment/N3",
        N3,
        ("side_payment:C=0.2", "side_payment:C=0.3,balanced=true"),
        _random(27),
        seed=27,
    ),
    # noisy response
    Case("noisy_response/N3_honest", N3, ("noisy_response:C=0.5",), _noisy_honest(0.5), seed=31),
    Case("noisy_response/N7_honest", N7, ("noisy_response:C=0.3",), _noisy_honest(0.3), seed=32),
    Case("noisy_response/N3_attacker", N3, ("noisy_response:C=0.5",), _mixed_noisy_honest(0.5, 33), seed=33),
    Case("noisy_response/N7_random", N7, ("noisy_response:C=0.8",), _random(34), seed=34),
    Case("noisy_response/hetero_N3", HET3, ("noisy_response:C=0.6",), _random(35), seed=35),
    Case("noisy_response_x2/N3", N3, ("noisy_response:C=0.2", "noisy_response:C=0.3"), _random(36), seed=36),
    # bounded attacks
    Case("bounded_attack/N3_equilibrium", N3, ("bounded_attack:A=1.5",), _bounded_eq(1.5), seed=41),
    Case("bounded_attack/N7_equilibrium", N7, ("bounded_attack:A=1.5",), _bounded_eq(1.5), seed=42),
    Case("bounded_attack/N2_equilibrium", N2, ("bounded_attack:A=0.7",), _bounded_eq(0.7), seed=43),
    # stacks
    Case(
        "noisy+balanced/N3_honest",
        N3,
        ("noisy_response:C=0.5", "side_payment:C=0.3,balanced=true"),
        _noisy_honest(0.5),
        seed=51,
    ),
    Case(
        "noisy+balanced/N3_random",
        N3,
        ("noisy_response:C=0.5", "side_payment:C=0.3,balanced=true"),
        _random(52),
        seed=52,
    ),
    Case(
        "balanced+noisy/N7_random",
        N7,
        ("side_payment:C=0.1,balanced=true", "noisy_response:C=0.4"),
        _random(53),
        seed=53,
    ),
    Case(
        "balanced+noisy+bounded/N3",
        N3,
        ("side_payment:C=0.3,balanced=true", "noisy_response:C=0.5", "bounded_attack:A=1.5"),
        _random(54, alpha_max=1.5),
        seed=54,
    ),
    Case(
        "bounded+noisy+plain/hetero_N3",
        HET3,
        ("bounded_attack:A=1.5", "noisy_response:C=0.5", "side_payment:C=0.2"),
        _random(55, alpha_max=1.5),
        seed=55,
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def simulated(request):
    case: Case = request.param
    env = make_env(case.mechanisms, **case.config)
    setting = Setting.from_env(env)
    profile = case.profile(setting, case.config)
    outcome = play(env, profile, B, case.seed)
    return case, env, setting, profile, outcome


def test_mse_matches_thm_4_1(simulated):
    case, env, setting, profile, outcome = simulated
    assert_mc_agrees(outcome.sq_error, expected_mse(profile, setting.nu, setting.noise_C), f"{case.id}: MSE")


def test_reward_matches_closed_form(simulated):
    case, env, setting, profile, outcome = simulated
    assert_mc_agrees(outcome.rewards, expected_reward(profile, setting), f"{case.id}: reward")


def test_payment_matches_closed_form(simulated):
    case, env, setting, profile, outcome = simulated
    if not setting.payments:
        assert outcome.payments is None
        return
    expected = sum(expected_payment(profile, setting.nu, C, balanced) for C, balanced in setting.payments)
    assert_mc_agrees(outcome.payments, expected, f"{case.id}: payment")


def test_setting_reads_the_mechanisms(simulated):
    case, env, setting, profile, outcome = simulated
    game = env.unwrapped.game
    np.testing.assert_array_equal(setting.nu, game.sigma**2 / game.n_samples + game.sigma_star**2)
    np.testing.assert_array_equal(setting.lam, game.lam)
    expected_noise = sum(float(s.split("C=")[1]) for s in case.mechanisms if s.startswith("noisy_response"))
    assert setting.noise_C == pytest.approx(expected_noise, rel=1e-12)
    assert len(setting.payments) == sum(s.startswith("side_payment") for s in case.mechanisms)


# ---------------------------------------------------------------------------------------------------------------
# Cor. B.1: the MSE at the bounded equilibrium


@pytest.mark.parametrize(
    "config,A,seed",
    [(N3, 1.5, 61), (N7, 1.5, 62), (N2, 0.7, 63), (N3, 3.0, 64)],
    ids=["N3_A1.5", "N7_A1.5", "N2_A0.7", "N3_A3"],
)
def test_bounded_equilibrium_mse_by_monte_carlo(config, A, seed):
    env = make_env([f"bounded_attack:A={A}"], **config)
    nu = float(env.unwrapped.game.nu[0])
    profile, mse = bounded_equilibrium(A, nu, config["n_players"], config["dim"])
    outcome = play(env, profile, B, seed)
    assert_mc_agrees(outcome.sq_error, mse, f"Cor. B.1 MSE (A={A}, nu={nu:.4f})")


# ---------------------------------------------------------------------------------------------------------------
# payments at honesty


@pytest.mark.parametrize("config,C,seed", [(N3, 0.3, 71), (N7, 0.05, 72), (N2, 1.1, 73)], ids=["N3", "N7", "N2"])
def test_plain_payment_at_honesty(config, C, seed):
    """Thm D.1: the expected plain payment at honesty is C nu (N-1)/N."""
    env = make_env([f"side_payment:C={C}"], **config)
    n = config["n_players"]
    nu = env.unwrapped.game.nu
    outcome = play(env, Profile.symmetric(n, config["dim"]), B, seed)
    assert_mc_agrees(outcome.payments, C * nu * (n - 1) / n, "plain payment at honesty")


@pytest.mark.parametrize("config,C,seed", [(N3, 0.3, 81), (N7, 0.05, 82), (N2, 1.1, 83)], ids=["N3", "N7", "N2"])
def test_balanced_payment_at_honesty_is_zero_on_average(config, C, seed):
    """Thm B.2: the expected balanced payment at honesty is 0."""
    env = make_env([f"side_payment:C={C},balanced=true"], **config)
    outcome = play(env, Profile.symmetric(config["n_players"], config["dim"]), B, seed)
    assert_mc_agrees(outcome.payments, 0.0, "balanced payment at honesty")


BALANCED_STACKS = [
    ("side_payment:C=0.3,balanced=true",),
    ("side_payment:C=0.3,balanced=true", "side_payment:C=2.5,balanced=true"),
    ("noisy_response:C=0.5", "side_payment:C=0.3,balanced=true"),
    ("side_payment:C=0.3,balanced=true", "noisy_response:C=0.5", "bounded_attack:A=1.5"),
    ("bounded_attack:A=2.0", "side_payment:C=7.0,balanced=true", "noisy_response:C=1.0"),
]


@pytest.mark.parametrize("config", [N2, N3, N7, HET7], ids=["N2", "N3", "N7", "hetero_N7"])
@pytest.mark.parametrize("mechanisms", BALANCED_STACKS, ids=["+".join(m) for m in BALANCED_STACKS])
def test_balanced_payments_sum_to_zero_every_episode(config, mechanisms):
    env = make_env(mechanisms, **config)
    game = env.unwrapped.game
    protocol = env.protocol
    rng = np.random.default_rng(91)
    batch = 20_000
    world = game.sample_world(rng, batch)
    # a different random action per episode and player, anywhere in the (possibly bounded) action box
    actions = rng.uniform(protocol.action_low, protocol.action_high, (batch, game.n_players, protocol.action_low.size))
    outcome = game.play(protocol, world, actions, rng)
    scale = np.abs(outcome.payments).max()
    assert scale > 0
    assert np.abs(outcome.payments.sum(axis=1)).max() < 1e-9 * (1 + scale)


@pytest.mark.parametrize("config", [N3, N7], ids=["N3", "N7"])
def test_balanced_payments_sum_to_zero_through_env_loop(config):
    env = make_env(["side_payment:C=0.3,balanced=true", "noisy_response:C=0.5", "bounded_attack:A=1.5"], **config)
    env.reset(seed=123)
    for k, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(1000 + k)
    sums, scales = [], []
    for _ in range(300):
        env.reset()
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        _, _, terminations, _, infos = env.step(actions)
        assert all(terminations.values())
        payments = np.array([infos[a]["payment"] for a in env.possible_agents])
        sums.append(payments.sum())
        scales.append(np.abs(payments).max())
    sums, scales = np.abs(np.array(sums)), np.array(scales)
    assert scales.max() > 0
    assert np.all(sums < 1e-9 * (1 + scales)), f"worst |sum of payments| {sums.max():.3g}"


# ---------------------------------------------------------------------------------------------------------------
# Setting.from_env


@pytest.mark.parametrize(
    "mechanisms",
    [
        ("robust_aggregation:rule=median",),
        ("side_payment:C=0.3,balanced=true", "robust_aggregation:rule=median"),
        ("robust_aggregation:rule=median", "noisy_response:C=0.5"),
    ],
    ids=["median", "balanced+median", "median+noisy"],
)
def test_from_env_rejects_robust_aggregation(mechanisms):
    env = make_env(mechanisms, **N3)
    with pytest.raises(ValueError):
        Setting.from_env(env)
