"""Classical Byzantine attacks on FedSGD (envs/fedsgd/byzantine.py): each batched attack against a plain per-run
reference loop, honest clients untouched, Gaussian noise statistics, the exact IPM and ALIE conditions, errors."""

from __future__ import annotations

import math

import pytest
import torch

from fedgames.envs.fedsgd.byzantine import (
    ATTACKS,
    alie_default_z,
    gaussian,
    honest_mean_std,
    inner_product_manipulation,
    little_is_enough,
    sign_flip,
)

SHAPES = [(1, 1, 1), (1, 3, 5), (4, 2, 7), (5, 6, 3), (3, 9, 40)]


def _inputs(shape, pattern, seed=0, dtype=torch.float64):
    """Random gradients and an attacker mask: 'random' (at least one honest per run), 'none' (all honest),
    'one_honest' (exactly one honest client per run, at a random position)."""
    runs, m, p = shape
    g = torch.Generator().manual_seed(seed)
    honest = torch.randn(shape, generator=g, dtype=dtype) * 2 + torch.randn(runs, 1, p, generator=g, dtype=dtype)
    if pattern == "none":
        attackers = torch.zeros(runs, m, dtype=torch.bool)
    elif pattern == "one_honest":
        attackers = torch.ones(runs, m, dtype=torch.bool)
        attackers[torch.arange(runs), torch.randint(0, m, (runs,), generator=g)] = False
    else:
        attackers = torch.rand(runs, m, generator=g) < 0.5
        attackers[torch.arange(runs), torch.randint(0, m, (runs,), generator=g)] = False
    return honest, attackers


def _reference(honest, attackers, make):
    """Per-run loop: ``make(run_gradients, honest_rows)`` -> a (P,) vector shared by the run's attackers, or a
    (m, P) block of per-client malicious messages."""
    out = honest.clone()
    for r in range(honest.shape[0]):
        good = honest[r][~attackers[r]]
        mal = make(honest[r], good)
        for i in range(honest.shape[1]):
            if attackers[r, i]:
                out[r, i] = mal if mal.dim() == 1 else mal[i]
    return out


def _ref_mean_std(good):
    mu = good.mean(dim=0)
    s = good.std(dim=0, unbiased=True) if good.shape[0] >= 2 else torch.zeros_like(mu)
    return mu, s


PATTERNS = ["random", "none", "one_honest"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_attacks_match_reference_loop(shape, pattern):
    honest, attackers = _inputs(shape, pattern, seed=SHAPES.index(shape) * 10 + PATTERNS.index(pattern))
    before = honest.clone()

    got = sign_flip(honest, attackers, scale=2.5)
    torch.testing.assert_close(got, _reference(honest, attackers, lambda run, good: -2.5 * run), rtol=0, atol=0)

    gen = torch.Generator().manual_seed(7)
    got = gaussian(honest, attackers, 0.3, gen)
    noise = torch.randn(honest.shape, generator=torch.Generator().manual_seed(7), dtype=honest.dtype)
    ref = honest.clone()
    ref[attackers] = honest[attackers] + 0.3 * noise[attackers]
    torch.testing.assert_close(got, ref, rtol=0, atol=0)

    for tau in (-1.5, 0.0, 0.7):
        got = little_is_enough(honest, attackers, tau)
        ref = _reference(
            honest, attackers, lambda run, good, tau=tau: (lambda ms: ms[0] + tau * ms[1])(_ref_mean_std(good))
        )
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)

        got = inner_product_manipulation(honest, attackers, tau)
        ref = _reference(honest, attackers, lambda run, good, tau=tau: -tau * good.mean(dim=0))
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)

    torch.testing.assert_close(honest, before, rtol=0, atol=0)  # inputs untouched


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_honest_clients_unchanged_and_shape_dtype_kept(name, dtype):
    honest, attackers = _inputs((4, 5, 6), "random", seed=3, dtype=dtype)
    args = {
        "sign_flip": (1.0,),
        "gaussian": (1.0, torch.Generator().manual_seed(0)),
        "little_is_enough": (-1.0,),
        "inner_product_manipulation": (2.0,),
    }[name]
    out = ATTACKS[name](honest, attackers, *args)
    assert out.shape == honest.shape and out.dtype == dtype and out.device == honest.device
    assert out.data_ptr() != honest.data_ptr()
    assert torch.equal(out[~attackers], honest[~attackers])
    assert not torch.equal(out[attackers], honest[attackers])  # attackers did change something
    # all honest: nothing changes
    none = torch.zeros_like(attackers)
    assert torch.equal(ATTACKS[name](honest, none, *args), honest)


def test_shared_vector_for_alie_and_ipm():
    honest, attackers = _inputs((6, 8, 5), "random", seed=11)
    for fn in (little_is_enough, inner_product_manipulation):
        out = fn(honest, attackers, -0.8)
        for r in range(6):
            rows = out[r][attackers[r]]
            if rows.shape[0] > 1:
                assert torch.equal(rows, rows[:1].expand_as(rows))


def test_honest_mean_std_matches_torch():
    honest, attackers = _inputs((5, 7, 4), "random", seed=5)
    mu, s = honest_mean_std(honest, attackers)
    for r in range(5):
        rmu, rs = _ref_mean_std(honest[r][~attackers[r]])
        torch.testing.assert_close(mu[r], rmu)
        torch.testing.assert_close(s[r], rs)


def test_gaussian_statistics_and_reproducibility():
    runs, m, p, sigma = 8, 10, 500, 0.7
    honest, attackers = _inputs((runs, m, p), "random", seed=1)
    out = gaussian(honest, attackers, sigma, torch.Generator().manual_seed(123))
    z = ((out - honest)[attackers]).flatten()  # sigma * N(0, 1) samples
    n = z.numel()
    assert n > 10_000
    mean, sd = z.mean(), z.std()
    assert abs(mean.item()) < 4 * sd.item() / math.sqrt(n)
    sq = (z - mean) ** 2
    var_se = sq.std().item() / math.sqrt(n)
    assert abs(sq.mean().item() - sigma**2) < 4 * var_se
    # same seed, same messages; another seed, different messages
    again = gaussian(honest, attackers, sigma, torch.Generator().manual_seed(123))
    assert torch.equal(out, again)
    other = gaussian(honest, attackers, sigma, torch.Generator().manual_seed(124))
    assert not torch.equal(out, other)
    # noise drawn for the whole block: an attacker's noise does not depend on who else attacks
    fewer = attackers.clone()
    fewer[0] = False
    part = gaussian(honest, fewer, sigma, torch.Generator().manual_seed(123))
    assert torch.equal(part[fewer], out[fewer])
    # sigma = 0 is the identity
    assert torch.equal(gaussian(honest, attackers, 0.0, torch.Generator().manual_seed(0)), honest)


def test_ipm_turns_the_mean_against_the_honest_mean_exactly_when_f_tau_exceeds_n():
    """Mean of all m messages = ((n - f tau) / m) mu_H, so <mean, mu_H> < 0 iff f * tau > n (n honest, f attackers)."""
    runs, m, p = 6, 10, 20
    g = torch.Generator().manual_seed(4)
    honest = torch.randn(runs, m, p, generator=g, dtype=torch.float64) + 1.0
    attackers = torch.zeros(runs, m, dtype=torch.bool)
    for r in range(runs):
        attackers[r, : r + 2] = True  # f = 2..7 attackers
    f = attackers.sum(1).double()
    n = m - f
    mu, _ = honest_mean_std(honest, attackers)
    threshold = n / f
    for factor, sign in ((1.05, -1), (0.95, 1)):
        for r in range(runs):
            tau = float(threshold[r] * factor)
            out = inner_product_manipulation(honest[r : r + 1], attackers[r : r + 1], tau)
            mean = out[0].mean(dim=0)
            torch.testing.assert_close(mean, (n[r] - f[r] * tau) / m * mu[r])
            assert torch.sign(mean @ mu[r]).item() == sign
    # at exactly f * tau = n the aggregate vanishes
    out = inner_product_manipulation(honest[:1], attackers[:1], float(threshold[0]))
    assert out[0].mean(dim=0).abs().max().item() < 1e-12


def test_alie_stays_inside_the_honest_spread_for_small_tau():
    """With n honest values, mean - min >= s / sqrt(n) and max - mean >= s / sqrt(n) (s^2 <= n a^2), so
    |tau| <= 1/sqrt(n) keeps mu + tau s in [min, max]; Samuelson's |x_i - mu| <= s (n-1)/sqrt(n) puts it strictly
    outside once |tau| > (n-1)/sqrt(n)."""
    honest, attackers = _inputs((20, 8, 50), "random", seed=9)
    n = (~attackers).sum(1)
    big = torch.finfo(honest.dtype).max
    lo = torch.where(attackers[..., None], big, honest).amin(dim=1)
    hi = torch.where(attackers[..., None], -big, honest).amax(dim=1)
    mu, s = honest_mean_std(honest, attackers)
    has_attacker = attackers.any(dim=1)
    for r in range(20):
        if not has_attacker[r]:
            continue
        a = int(attackers[r].nonzero()[0])
        k = int(n[r])
        for tau in (1 / math.sqrt(k), -1 / math.sqrt(k), 0.3 / math.sqrt(k)):
            msg = little_is_enough(honest[r : r + 1], attackers[r : r + 1], tau)[0, a]
            assert bool((msg >= lo[r] - 1e-12).all() and (msg <= hi[r] + 1e-12).all())
            torch.testing.assert_close(msg, mu[r] + tau * s[r])
        if k >= 2:
            tau = -1.01 * (k - 1) / math.sqrt(k)
            msg = little_is_enough(honest[r : r + 1], attackers[r : r + 1], tau)[0, a]
            assert bool((msg < lo[r]).all())
            # the z-score of the message is exactly tau in every coordinate
            torch.testing.assert_close((msg - mu[r]) / s[r], torch.full_like(msg, tau))


def test_alie_one_honest_client_sends_its_gradient():
    honest, attackers = _inputs((3, 4, 6), "one_honest", seed=2)
    out = little_is_enough(honest, attackers, -2.0)
    for r in range(3):
        h = honest[r][~attackers[r]][0]
        assert torch.equal(out[r][attackers[r]], h.expand(3, -1))


def test_alie_default_z():
    # Phi^{-1}((n - s)/n) with s = floor(n/2 + 1) - f
    assert alie_default_z(50, 24) == pytest.approx(1.7507, abs=1e-4)  # s = 2, Phi^{-1}(0.96)
    assert alie_default_z(50, 12) == pytest.approx(0.5828, abs=1e-4)  # s = 14, Phi^{-1}(0.72)
    with pytest.raises(ValueError, match="f"):
        alie_default_z(10, 6)
    with pytest.raises(ValueError, match="n"):
        alie_default_z(0, 0)


def test_vectorised_over_runs_agrees_with_run_by_run():
    honest, attackers = _inputs((7, 5, 9), "random", seed=21)
    for fn, arg in ((little_is_enough, -1.2), (inner_product_manipulation, 3.0), (sign_flip, 1.0)):
        whole = fn(honest, attackers, arg)
        parts = torch.cat([fn(honest[r : r + 1], attackers[r : r + 1], arg) for r in range(7)])
        torch.testing.assert_close(whole, parts, rtol=0, atol=0)


def test_empty_runs_and_clients():
    honest = torch.zeros(0, 3, 4)
    assert sign_flip(honest, torch.zeros(0, 3, dtype=torch.bool)).shape == (0, 3, 4)
    honest = torch.zeros(2, 0, 4)
    mask = torch.zeros(2, 0, dtype=torch.bool)
    for fn in (little_is_enough, inner_product_manipulation):
        assert fn(honest, mask, 1.0).shape == (2, 0, 4)


def test_errors():
    honest, attackers = _inputs((3, 4, 5), "random", seed=0)
    gen = torch.Generator().manual_seed(0)
    for fn, arg in ((sign_flip, 1.0), (little_is_enough, 1.0), (inner_product_manipulation, 1.0)):
        with pytest.raises(ValueError, match="honest"):
            fn(honest[0], attackers, arg)  # 2-D
        with pytest.raises(ValueError, match="honest"):
            fn(honest.long(), attackers, arg)  # integer dtype
        with pytest.raises(ValueError, match="honest"):
            fn(honest.numpy(), attackers, arg)  # not a tensor
        with pytest.raises(ValueError, match="attackers"):
            fn(honest, attackers.int(), arg)  # not bool
        with pytest.raises(ValueError, match="attackers"):
            fn(honest, attackers[:, :3], arg)  # wrong shape
        with pytest.raises(ValueError, match="attackers"):
            fn(honest, attackers.tolist(), arg)  # not a tensor
    for bad in (math.inf, -math.inf, math.nan, "1", None, True):
        with pytest.raises(ValueError, match="scale"):
            sign_flip(honest, attackers, bad)
        with pytest.raises(ValueError, match="tau"):
            little_is_enough(honest, attackers, bad)
        with pytest.raises(ValueError, match="tau"):
            inner_product_manipulation(honest, attackers, bad)
        with pytest.raises(ValueError, match="sigma"):
            gaussian(honest, attackers, bad, gen)
    with pytest.raises(ValueError, match="sigma"):
        gaussian(honest, attackers, -0.1, gen)
    with pytest.raises(ValueError, match="generator"):
        gaussian(honest, attackers, 0.1, 123)
    with pytest.raises(ValueError, match="honest"):
        gaussian(honest.int(), attackers, 0.1, gen)
    # a run in which everyone attacks has no honest mean
    all_bad = attackers.clone()
    all_bad[1] = True
    for fn in (little_is_enough, inner_product_manipulation):
        with pytest.raises(ValueError, match="no honest client"):
            fn(honest, all_bad, -1.0)
    # but sign flip and Gaussian need no honest client
    assert torch.equal(sign_flip(honest, all_bad)[1], -honest[1])
    # tensor scalars are accepted, non-scalar tensors are not
    assert torch.equal(sign_flip(honest, attackers, torch.tensor(2.0)), sign_flip(honest, attackers, 2.0))
    with pytest.raises(ValueError, match="scale"):
        sign_flip(honest, attackers, torch.ones(2))
