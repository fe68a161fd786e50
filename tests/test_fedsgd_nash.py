"""The equilibrium check (SPEC §5) on the multi-round FedSGD game ``fedsgd_v0``, and [H] Thm 6.1 on the quadratic.

The game: N = 4 players, T = 10 rounds, Thm 6.1's step sizes ``4 / (m_sc (eta + t))`` with ``eta = 100``,
projection on a ball of radius 3, global noise, ``alpha in [0, 10]``. Player 0 learns (PPO on the batched
best-response view, one step = one round of 256 runs; the oracle keeps the best of 3 seeds) while the others are
honest. Two choices make the mean alpha over an episode the statistic to test:

- ``lambda = 0.5``. With ``lambda = 1`` the noise of every round but the last moves the player's own final model
  exactly as much as the others' (the shared model), so only the last round's alpha would matter; with
  ``lambda < 1`` every round's noise pays (its damage to the others outweighs the player's own), so the best reply
  is ``alpha_max`` in every round.
- ``eta = 100``: nearly flat steps, so noise from early rounds is not contracted away before the end. With
  ``eta = 10`` the gain from ``alpha_max`` in the first round was 1/300 of the last round's, the learner's early
  alphas stayed wherever they drifted, and the episode's mean alpha ranged over 2.6-3.8 of 4 between seeds;
  here the per-round gains lie within a factor 6 of each other.

- Without a penalty the learner raises alpha: an untrained SB3 policy plays the centre ``alpha_max / 2`` of the
  range in every round (its Gaussian mean starts at 0 of the normalised ``[-1, 1]``), and a learner that found
  noise costly would move below it, so the learned mean alpha (over all rounds, and in the last round) must end
  above the centre (it was 6.7-8.9 over 5 oracle seeds); and the reply beats honesty by more than 4 standard
  errors of the paired difference (the Nash check refutes honesty).
- With balanced side payments of weight ``C = 4``, Thm 6.1 bounds every round's alpha of any best reply by
  ``8 L L_U N / (C (N-2) m_sc sqrt(T + eta)) ~ 1.7``, below the untrained policy's ``alpha_max / 2`` (so the check
  can fail). The learned reply's alpha stays below it in every round and episode, so does the best constant alpha
  of the grid oracle, and the Nash check finds honesty consistent, as the theory predicts for a large C.

The batched episodes are checked against the PettingZoo env (same draws: identical rewards and observations), and
the ``fedgames check`` / ``fedgames train`` command line is run with tiny budgets. The whole file takes ~20 s on one
core.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecEnv

import fedgames
from fedgames.agents import ConstantPolicy
from fedgames.cli import main
from fedgames.envs.batch import episode_batch, horizon
from fedgames.envs.fedsgd.batch import OBSERVATION_SIZE, FedSGDBatch, held_out_loss
from fedgames.envs.fedsgd.theory import quadratic_thm_6_1_bound, thm_6_1_bound
from fedgames.eval.montecarlo import rollout, simulate
from fedgames.eval.nash import nash_check
from fedgames.eval.strategy import summarize_policy
from fedgames.train.best_response_env import BestResponseVecEnv
from fedgames.train.oracles import GridOracle, LearnedOracle, OracleResult, default_algo_kwargs

N, T, ETA, RADIUS, LAM, ALPHA_MAX, C = 4, 10, 100.0, 3.0, 0.5, 10.0, 4.0
CONFIG = dict(
    objective="quadratic",
    n_players=N,
    rounds=T,
    lr="decaying",
    eta=ETA,
    radius=RADIUS,
    weighting="uniform",
    noise_norm="global",
    alpha_max=ALPHA_MAX,
    lam=LAM,
    samples_per_client=5,
)
PENALTY = [f"side_payment:C={C},balanced=true"]
TOL = 5e-3  # the verdict tolerance, reward units
PLAYER = "player_0"


def make(mechanisms=(), **overrides):
    return fedgames.make("fedsgd_v0", mechanisms=list(mechanisms), **(CONFIG | overrides))


def honest(env):
    return {agent: ConstantPolicy([0.0]) for agent in env.possible_agents}


def ppo(seeds):
    return LearnedOracle("ppo", timesteps=60_000, seeds=seeds, n_envs=256, validation_episodes=1_000)


def bound():
    model = make().unwrapped.game.model
    return quadratic_thm_6_1_bound(model, C, n_players=N, rounds=T, eta=ETA, radius=RADIUS, lam=LAM)


def standard_error(check):
    """The paired standard error behind a check's normal 95% interval."""
    return (check.ci[1] - check.ci[0]) / (2 * NormalDist().inv_cdf(0.975))


class KnownReply:
    """An oracle that returns a reply found earlier (so one training serves several assertions)."""

    def __init__(self, result: OracleResult) -> None:
        self.result = result

    def best_response(self, env, player, policies, seed=0, batch_size=None):
        return self.result


# ---------------------------------------------------------------------------------------------------------------
# Batched episodes = the env's episodes
# ---------------------------------------------------------------------------------------------------------------


def test_batch_of_one_replays_the_env_exactly():
    """A batch of one run seeded like the env draws the same data and noise, so it must give the env's
    observations, rewards and payments round by round, terminal utility included."""
    env = make(PENALTY)
    alphas = np.array([1.5, 0.0, 0.5, 3.0])
    rng = np.random.default_rng(3)
    torch_seed = int(np.random.default_rng(3).integers(2**63 - 1))  # what the batch seeds its generator with
    batch = episode_batch(env, 1, rng)
    assert isinstance(batch, FedSGDBatch) and horizon(env) == T
    observations, _ = env.reset(seed=torch_seed)
    np.testing.assert_array_equal(batch.reset()[0], np.stack([observations[a] for a in env.possible_agents]))
    for t in range(T):
        step = batch.step(alphas[None, :, None])
        observations, rewards, terminations, _, infos = env.step(
            {a: np.array([alphas[i]], dtype=np.float32) for i, a in enumerate(env.possible_agents)}
        )
        np.testing.assert_array_equal(step.observations[0], np.stack([observations[a] for a in env.possible_agents]))
        np.testing.assert_allclose(step.rewards[0], [rewards[a] for a in env.possible_agents], rtol=1e-12)
        np.testing.assert_allclose(step.payments[0], [infos[a]["payment"] for a in env.possible_agents], rtol=1e-6)
        assert step.done == all(terminations.values()) == (t == T - 1)
    with pytest.raises(RuntimeError, match="reset"):
        batch.step(np.zeros((1, N, 1)))


def test_batched_terminal_utilities_follow_the_definition():
    """Each run's terminal reward is ``(1/(N-1)) sum_{j != i} f(theta^j) - lambda f(theta^i)`` with
    ``theta^i`` the self-corrected final model of a player active in the last round."""
    env = make(active=2)
    batch = episode_batch(env, 16, np.random.default_rng(0))
    batch.reset()
    alphas = np.tile(np.array([2.0, 0.0, 1.0, 4.0])[None, :, None], (16, 1, 1))
    for _ in range(T):
        step = batch.step(alphas)
    state, game = batch._state, env.unwrapped.game
    losses = held_out_loss(game, None, state.theta).double().numpy()[:, None].repeat(N, 1)
    for r in range(16):
        for i in state.last.active[r].tolist():
            losses[r, i] = float(held_out_loss(game, None, game.final_parameters(state, i)[r : r + 1])[0])
    expected = (losses.sum(1, keepdims=True) - losses) / (N - 1) - LAM * losses
    np.testing.assert_allclose(step.rewards, expected, rtol=1e-12)
    assert step.payments is None  # no payment mechanism


def test_multi_round_best_response_vec_env_contract():
    env = make(PENALTY)
    venv = BestResponseVecEnv(env, PLAYER, {a: p for a, p in honest(env).items() if a != PLAYER}, n_envs=8, seed=0)
    assert isinstance(venv, VecEnv) and venv.observation_space.shape == (OBSERVATION_SIZE,)
    obs = venv.reset()
    assert obs.shape == (8, OBSERVATION_SIZE) and np.all(obs == 0)  # round 0: nobody has been active yet
    returns = np.zeros(8)
    for t in range(T):
        obs, rewards, dones, infos = venv.step(np.full((8, 1), -1.0, dtype=np.float32))  # -1: alpha = 0
        returns += rewards
        assert dones.all() == (t == T - 1) and dones.any() == (t == T - 1)
        if t < T - 1:
            np.testing.assert_allclose(obs[:, 0], (t + 1) / T, rtol=1e-6)
    assert all(info["terminal_observation"][0] == 1.0 for info in infos)  # t/T = 1 at the end
    np.testing.assert_allclose(obs[:, 0], 0.0)  # the next episodes started
    assert np.all(np.isfinite(returns))


# ---------------------------------------------------------------------------------------------------------------
# Without a penalty: noise pays, and the learner finds it
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def free_report():
    env = make()
    return nash_check(
        env, honest(env), ppo(seeds=3), profile_name="honest", players="symmetric", episodes=3_000, tolerance=TOL
    )


def test_without_penalty_the_learner_raises_alpha(free_report):
    (check,) = free_report.players  # symmetric: one check for all four players
    assert check.represents == [f"player_{i}" for i in range(N)]
    assert check.learned["alpha"] > ALPHA_MAX / 2
    assert check.learned["alpha_last"] > ALPHA_MAX / 2
    assert check.candidate == {"alpha": 0.0, "alpha_last": 0.0}


def test_without_penalty_the_learned_reply_beats_honesty(free_report):
    (check,) = free_report.players
    assert check.regret > 4 * standard_error(check)
    assert check.verdict == "refuted"
    assert free_report.nash_conv == pytest.approx(N * check.regret)
    assert check.budget["hyperparameters"] == default_algo_kwargs("ppo", 256, horizon=T)
    assert len(check.curves) == 3
    assert len(check.curves[0]) == math.ceil(60_000 / (256 * T))  # one point per batch of finished episodes


# ---------------------------------------------------------------------------------------------------------------
# With the balanced side payment: Thm 6.1
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def penalised():
    env = make(PENALTY)
    policies = honest(env)
    learned = ppo(seeds=1).best_response(env, PLAYER, policies, seed=0)
    grid = GridOracle(components=("alpha",), points=9, episodes=300, refine=False, lipschitz=None)
    return env, policies, learned, grid


def test_the_bound_is_not_vacuous():
    assert 0 < bound() < ALPHA_MAX / 2  # an untrained learner (alpha_max / 2 in every round) would fail the check


def test_with_penalty_learned_alpha_stays_below_thm_6_1_bound(penalised):
    env, policies, learned, _ = penalised
    played = rollout(
        episode_batch(env, 1_000, np.random.default_rng(1)),
        {**policies, PLAYER: learned.policy},
        env.possible_agents,
        np.random.default_rng(2),
        record_actions=True,
    )
    alpha = played.actions[:, :, 0, 0]  # (round, episode) of player 0
    assert alpha.max() <= bound()


def test_with_penalty_best_grid_alpha_stays_below_thm_6_1_bound(penalised):
    env, policies, _, grid = penalised
    reply = grid.best_response(env, PLAYER, policies, seed=0)
    assert reply.policy.action[0] <= bound()


@pytest.mark.parametrize(("weight", "best_alpha"), [(2e-5, ALPHA_MAX), (3e-4, 0.0)])
def test_best_grid_alpha_switches_near_the_c_where_honesty_starts_paying(weight: float, best_alpha: float):
    """``C = 4`` outweighs the gain from noise by far, so it cannot tell a penalty of the right size from one 1e4
    times too small. Honesty starts paying between ``C = 5e-5`` (the grid's best constant alpha is still
    ``alpha_max``) and ``1e-4`` (it is 0); a factor of about 3 either side, the grid's reply is at the ends."""
    env = make([f"side_payment:C={weight},balanced=true"])
    grid = GridOracle(components=("alpha",), points=9, episodes=300, refine=False, lipschitz=None)
    reply = grid.best_response(env, PLAYER, honest(env), seed=0)
    assert reply.policy.action[0] == best_alpha


def test_with_large_penalty_honesty_is_consistent(penalised):
    env, policies, learned, grid = penalised
    report = nash_check(
        env,
        policies,
        [KnownReply(learned), grid],
        profile_name="honest",
        players=[PLAYER],
        episodes=1_000,
        tolerance=TOL,
    )
    (check,) = report.players
    assert check.verdict == "consistent"
    assert check.ci[1] < TOL
    assert report.mechanisms == [f"side_payment:C={C},balanced=true"]
    assert report.config["rounds"] == T and report.config["lam"] == [LAM] * N  # one lambda_i per player


# ---------------------------------------------------------------------------------------------------------------
# Small pieces and bad input
# ---------------------------------------------------------------------------------------------------------------


def test_thm_6_1_bound_formula():
    assert thm_6_1_bound(2.0, 0.5, 4, 1.0, 1.0, 12, 4.0) == pytest.approx(8 * 2 * 0.5 * 4 / (2 * 1 * 4))
    model = make().unwrapped.game.model
    lipschitz = model.smoothness * (RADIUS + math.hypot(*model.theta_star))
    assert bound() == pytest.approx(
        8 * lipschitz * max(1 / (N - 1), LAM) * N / (C * (N - 2) * model.strong_convexity * math.sqrt(T + ETA))
    )


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(C=0.0), r"C must be a finite number > 0"),
        (dict(n_players=2), r"n_players must be an integer >= 3"),
        (dict(radius=math.inf), r"radius must be a finite number > 0"),
        (dict(rounds=0), r"rounds must be an integer >= 1"),
        (dict(lam=-1.0), r"lam must be a finite number >= 0"),
    ],
)
def test_thm_6_1_bound_bad_input(kwargs, pattern):
    model = make().unwrapped.game.model
    arguments = dict(C=C, n_players=N, rounds=T, eta=ETA, radius=RADIUS, lam=LAM) | kwargs
    with pytest.raises(ValueError, match=pattern):
        quadratic_thm_6_1_bound(model, **arguments)


def test_multi_round_summary_needs_the_profile_and_batches_need_a_size():
    env = make()
    with pytest.raises(ValueError, match="profile"):
        summarize_policy(env, PLAYER, ConstantPolicy([1.0]))
    with pytest.raises(ValueError, match="size must be >= 1"):
        episode_batch(env, 0, np.random.default_rng(0))


def test_simulate_returns_episode_returns():
    env = make(PENALTY)
    results = simulate(env, {**honest(env), PLAYER: ConstantPolicy([1.0])}, 64, seed=0)
    assert results.rewards.shape == results.payments.shape == (64, N) and results.sq_error is None
    assert np.all(np.abs(results.payments.sum(1)) <= 1e-5 * np.abs(results.payments).sum(1))  # balanced: sum 0


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


ENV_ARGS = [
    "-e",
    "n_players=4",
    "-e",
    "rounds=5",
    "-e",
    "lr=decaying",
    "-e",
    "eta=100",
    "-e",
    "radius=3",
    "-e",
    "alpha_max=10",
    "-e",
    "lam=0.5",
    "-e",
    "samples_per_client=5",
    "--quiet",
]


def test_cli_check_fedsgd_grid(tmp_path, capsys):
    out = tmp_path / "grid"
    args = [
        "check",
        "fedsgd_v0",
        *ENV_ARGS,
        "-m",
        PENALTY[0],
        "--profile",
        "honest",
        "--oracle",
        "grid",
        "--grid-points",
        "3",
        "--grid-episodes",
        "100",
        "--episodes",
        "200",
        "--players",
        "symmetric",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["env"] == "fedsgd_v0" and data["config"]["rounds"] == 5
    assert data["players"][0]["verdict"] == "consistent"
    assert data["players"][0]["learned"]["alpha"] == 0.0  # every constant alpha > 0 pays more than it gains
    assert "NashConv" in capsys.readouterr().out


def test_cli_check_fedsgd_ppo_and_constant_profile(tmp_path, capsys):
    args = [
        "check",
        "fedsgd_v0",
        *ENV_ARGS,
        "--profile",
        "alpha=0,1,1,1",
        "--oracle",
        "ppo",
        "--timesteps",
        "640",
        "--seeds",
        "1",
        "--n-envs",
        "16",
        "--episodes",
        "100",
        "--players",
        "symmetric",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert [p["candidate"]["alpha"] for p in data["players"]] == [0.0, 1.0]  # two types
    assert data["players"][1]["represents"] == ["player_1", "player_2", "player_3"]
    assert data["players"][0]["budget"]["hyperparameters"]["n_steps"] == 5  # one whole episode per rollout
    assert (tmp_path / "learning_curves.png").exists()
    capsys.readouterr()


@pytest.mark.parametrize("mode", ["independent", "shared"])
def test_cli_train_fedsgd(tmp_path, capsys, mode):
    args = [
        "train",
        "fedsgd_v0",
        *ENV_ARGS,
        "--mode",
        mode,
        "--rounds",
        "1",
        "--steps",
        "320",
        "--n-envs",
        "16",
        "--eval-episodes",
        "64",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    training = json.loads((tmp_path / "training.json").read_text())
    assert training["config"]["eval_episodes"] == 64
    history = training["history"]
    assert len(history) == 1 and set(history[0]["players"]) == {f"player_{i}" for i in range(N)}
    assert {"alpha", "alpha_last", "reward"} <= set(history[0]["players"]["player_0"])
    assert "player_0: alpha=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "profile, message",
    [("theory", "no closed-form equilibrium"), ("beta=0.5", "unknown key 'beta'"), ("alpha=11", "alpha=11 is outside")],
)
def test_cli_fedsgd_bad_profiles(capsys, profile, message):
    args = [
        "check",
        "fedsgd_v0",
        *ENV_ARGS,
        "--profile",
        profile,
        "--oracle",
        "grid",
        "--grid-points",
        "2",
        "--grid-episodes",
        "10",
        "--episodes",
        "10",
    ]
    assert main(args) == 2
    assert message in capsys.readouterr().err
