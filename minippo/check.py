"""Grading a student's function against independent references: ``minippo check EXERCISE FILE|DIR``.

A student writes one function of the library (GAE, reward-to-go, the clipped surrogate, conjugate
gradient, the Bradley–Terry loss or the KL-penalised rewards) in a Python file; the grader runs it on a
fixed list of cases and prints each as PASS or FAIL, with a hint on failure. Every case compares the
student's output with a reference written *independently* of the library: a brute-force sum, a closed
form, a number worked by hand, ``torch.linalg.solve``, or a gradient from ``torch.autograd`` compared with
the analytic one. The library's own function is the model solution (``--solution``): it passes every
case, and nothing is written twice.

=====================  ===============================================================  ==============
EXERCISE               the function FILE defines                                        shapes
=====================  ===============================================================  ==============
gae                    compute_gae(rewards, values, next_values, dones, gamma,          [T, N]
                       gae_lambda) -> (advantages, returns)
reward_to_go           reward_to_go(rewards, dones, gamma) -> returns                   [T, N]
clipped_surrogate      clipped_surrogate_loss(log_probs, old_log_probs, advantages,     [B] → scalar
                       clip_range) -> loss  (−L^CLIP)
conjugate_gradient     conjugate_gradient(Avp, b, iterations) -> x                      [P]
bradley_terry          bradley_terry_loss(chosen_scores, rejected_scores) -> loss       [B] → scalar
kl_penalised_rewards   kl_penalised_rewards(log_probs, ref_log_probs, scores, ends,     [T, N]
                       beta) -> rewards
=====================  ===============================================================  ==============

``T`` is steps per rollout, ``N`` parallel streams, ``B`` samples in a batch, ``P`` parameters.

The student's file runs in a child process (a fork of a server that has imported torch once, or a
fresh interpreter on Windows), so a function that never returns is stopped after ``timeout`` seconds,
and a file that changes global state (``torch.set_default_dtype``, say) cannot affect the next one.

Exit status of ``minippo check EXERCISE FILE``: 0 if every case passes; 1 if any fails; 2 if the
submission could not be graded, with one line naming why: no such file, a syntax error, no function of
that name, an exception raised by it, a return value of the wrong type, or no answer within the time
limit. ``minippo check EXERCISE DIR`` grades every ``*.py`` file of DIR (a class) and prints a table, one
row per file; exit status 0 only if every file passes every case, else 1.

Each exercise's section below names its source (paper and equation) and holds its cases and their
references; ``EXERCISES`` at the end lists them.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import io
import math
import multiprocessing
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .errors import MinippoError
from .lm.reward_model import bradley_terry_loss
from .lm.text_rollout import kl_penalised_rewards
from .ppo import clipped_surrogate_loss
from .rollout import compute_gae
from .trpo import conjugate_gradient

DEFAULT_TIMEOUT = 10.0   # seconds per submission: loading the file and running every case
STARTUP_LIMIT = 120.0    # seconds for the child process itself to start (importing torch), not counted above


# --- What a case is, and how a student's function is called -----------------------------------------

class SubmissionError(Exception):
    """The submission cannot be graded: the function raised, or returned something of the wrong type.
    The message is one line."""


@dataclass
class Case:
    """One test of the student's function. ``run(fn)`` returns None if ``fn`` passes, else what was wrong
    and a hint (lines of text); it raises :class:`SubmissionError` if ``fn`` raises or returns the wrong
    type."""

    name: str
    run: Callable[[Callable], str | None]


@dataclass
class Exercise:
    """An exercise: the function a file must define, its parameters, the model solution (the library's
    function, adapted to the exercise's signature) and the cases."""

    name: str
    function: str
    parameters: tuple[str, ...]
    returns: str
    solution: Callable
    cases: Callable[[], list[Case]]

    @property
    def signature(self) -> str:
        return f"{self.function}({', '.join(self.parameters)}) -> {self.returns}"


def _call(fn: Callable, *args):
    """``fn(*args)``, with any exception turned into a one-line :class:`SubmissionError` that names the
    line of the student's file it came from."""
    try:
        return fn(*args)
    except Exception as e:  # the student's code: anything can happen
        filename = getattr(getattr(fn, "__code__", None), "co_filename", None)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == filename]
        where = f" (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
        message = " ".join(str(e).split())[:200]
        name = getattr(fn, "__name__", "the function")
        raise SubmissionError(f"{name} raised {type(e).__name__}: {message}{where}") from None


def _tensor(x, what: str) -> Tensor:
    """``x`` if it is a floating-point tensor; else :class:`SubmissionError` naming what was returned."""
    if not isinstance(x, Tensor):
        raise SubmissionError(f"{what} must be a torch.Tensor, but it is a {type(x).__name__}")
    if not x.is_floating_point():
        raise SubmissionError(f"{what} must be a floating-point tensor, but its dtype is {x.dtype}")
    return x


def _compare(name: str, got: Tensor, expected: Tensor, hint: str, rtol: float = 1e-6,
             atol: float = 1e-8) -> str | None:
    """None if ``got`` matches ``expected`` (same shape, close values); else the first position that
    differs and the hint."""
    if got.shape != expected.shape:
        return f"{name} has shape {list(got.shape)}, expected {list(expected.shape)}.\nhint: {hint}"
    got64, expected64 = got.detach().double(), expected.detach().double()
    bad = ~torch.isclose(got64, expected64, rtol=rtol, atol=atol)
    if not bad.any():
        return None
    index = tuple(int(i) for i in bad.nonzero()[0])
    at = f"[{', '.join(map(str, index))}]" if index else ""
    return (f"{name}{at} = {got64[index].item():.6g}, expected {expected64[index].item():.6g}"
            f" ({int(bad.sum())} of {bad.numel()} values differ).\nhint: {hint}")


def _compare_loss(got: Tensor, expected: float, batch_size: int, hint: str, rtol: float = 1e-6
                  ) -> str | None:
    """Like :func:`_compare` for a scalar loss, naming the two usual slips when it spots them."""
    if got.shape != torch.Size([]):
        return (f"the loss has shape {list(got.shape)}; it must be a scalar (a 0-dim tensor).\n"
                "hint: average over the batch with .mean().")
    value = got.item()
    if math.isclose(value, expected, rel_tol=rtol, abs_tol=1e-9):
        return None
    if expected != 0 and math.isclose(value, -expected, rel_tol=rtol):
        hint = "the sign is flipped: an optimiser minimises the loss, so return the negative objective."
    elif batch_size > 1 and expected != 0 and math.isclose(value, batch_size * expected, rel_tol=rtol):
        hint = "it is B times too large: average over the batch (.mean()), do not sum."
    return f"the loss is {value:.6g}, expected {expected:.6g}.\nhint: {hint}"


def _inputs_unchanged_case(fn_args: Callable[[], tuple], names: tuple[str, ...]) -> Case:
    """A case that calls the function on fresh inputs ``fn_args()`` (their parameter ``names``) and checks
    that the tensors among them are unchanged."""
    def run(fn):
        args = fn_args()
        copies = {n: a.clone() for n, a in zip(names, args, strict=True) if isinstance(a, Tensor)}
        _call(fn, *args)
        for name, arg in zip(names, args, strict=True):
            if name in copies and not torch.equal(arg, copies[name]):
                return (f"the function changed its input {name} in place.\nhint: compute into new tensors "
                        "(x = x + y, not x += y), so that the batch the caller passed in stays as it was.")
        return None
    return Case("leaves its input tensors unchanged", run)


def _random(generator: torch.Generator, *shape: int, low: float = -1.0, high: float = 1.0) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


# --- gae: GAE(γ, λ), Schulman et al. 2016, eq. 16 --------------------------------------------------

def brute_force_gae(rewards: Tensor, values: Tensor, next_values: Tensor, dones: Tensor, gamma: float,
                    gae_lambda: float) -> Tensor:
    """Â_t = Σ_{l≥0} (γλ)^l δ_{t+l}, summed directly (no recursion): the sum stops after the step where
    the episode ended, or at the end of the rollout. Inputs ``[T, N]``; returns ``[T, N]`` float64."""
    T, N = rewards.shape
    r, v, nv, d = (x.tolist() for x in (rewards, values, next_values, dones))
    advantages = [[0.0] * N for _ in range(T)]
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                total += weight * (r[k][n] + gamma * nv[k][n] - v[k][n])  # (γλ)^(k−t) δ_k
                if d[k][n]:
                    break
                weight *= gamma * gae_lambda
            advantages[t][n] = total
    return torch.tensor(advantages, dtype=torch.float64)


_RETURNS_HINT = "returns must be the λ-return R̂_t = Â_t + V(s_t) (the value target), not Â_t or G_t."


def _gae_outputs(fn, args) -> tuple[Tensor, Tensor]:
    out = _call(fn, *args)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        kind = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, tuple | list) else "")
        raise SubmissionError(f"compute_gae must return (advantages, returns), two tensors; it returned "
                              f"{kind}")
    return _tensor(out[0], "advantages"), _tensor(out[1], "returns")


def _gae_case(name: str, args: tuple, expected: Tensor, hint: str, rtol: float = 1e-6) -> Case:
    """Compare the student's ``(advantages, returns)`` on ``args`` with ``expected`` advantages."""
    def run(fn):
        advantages, returns = _gae_outputs(fn, tuple(a.clone() if isinstance(a, Tensor) else a for a in args))
        return (_compare("advantages", advantages, expected, hint, rtol=rtol)
                or _compare("returns", returns, expected + args[1].double(), _RETURNS_HINT, rtol=rtol))
    return Case(name, run)


def _gae_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    col = lambda *xs: torch.tensor(xs, dtype=torch.float64).unsqueeze(1)  # [T] -> [T, N=1]
    zeros = lambda T, N: torch.zeros(T, N, dtype=torch.float64)
    cases = []

    # Tutorial 02's worked example: γ = 0.9, λ = 0.5, terminated at t = 2 (nothing to bootstrap).
    cases.append(_gae_case(
        "the worked example of tutorial 02 (T=3, terminates at t=2)",
        (col(1.0, 0.0, 2.0), col(0.5, 1.0, 1.5), col(1.0, 1.5, 0.0), col(0.0, 0.0, 1.0), 0.9, 0.5),
        col(1.65875, 0.575, 0.5),
        "δ_t = r_t + γ V(s_{t+1}) − V(s_t) with V(s_{t+1}) = next_values[t], and "
        "Â_t = δ_t + γλ (1 − done_t) Â_{t+1}, from t = T−1 down to 0."))

    r, v, nv = _random(g, 1, 4), _random(g, 1, 4), _random(g, 1, 4)
    cases.append(_gae_case(
        "T = 1: Â_0 = δ_0 = r_0 + γ V(s_1) − V(s_0)", (r, v, nv, zeros(1, 4), 0.9, 0.95),
        r + 0.9 * nv - v,
        "with one step there is nothing to carry back: Â_0 = δ_0, and V(s_1) is next_values[0]."))

    r, v, nv = _random(g, 6, 3), _random(g, 6, 3), _random(g, 6, 3)
    cases.append(_gae_case(
        "λ = 0: Â_t = δ_t, one-step TD", (r, v, nv, zeros(6, 3), 0.99, 0.0),
        r + 0.99 * nv - v,
        "with λ = 0 nothing is carried back: Â_t = δ_t = r_t + γ next_values[t] − values[t]. Is λ in the "
        "factor γλ that carries Â_{t+1}? Is V(s_{t+1}) next_values[t] (not values[t+1])?"))

    cases.append(_gae_case(
        "γ = 0: Â_t = r_t − V(s_t)", (r, v, nv, zeros(6, 3), 0.0, 0.95), r - v,
        "with γ = 0 the future does not count: δ_t = r_t − V(s_t), and γλ = 0 carries nothing back."))

    # λ = 1, no episode end: Monte Carlo, Â_t = Σ_{k≥t} γ^(k−t) r_k + γ^(T−t) V(s_T) − V(s_t).
    T, gamma = 6, 0.9
    powers = gamma ** torch.arange(T, dtype=torch.float64)
    mc = torch.stack([(powers[:T - t, None] * r[t:]).sum(0) + gamma ** (T - t) * nv[-1] - v[t]
                      for t in range(T)])
    nv_chain = torch.cat([v[1:], nv[-1:]])  # within one episode V(s_{t+1}) is the next row's V(s_t)
    cases.append(_gae_case(
        "λ = 1 and no episode end: Â_t = G_t + γ^(T−t) V(s_T) − V(s_t) (Monte Carlo)",
        (r, v, nv_chain, zeros(T, 3), gamma, 1.0), mc,
        "with λ = 1 the δ's telescope to the discounted reward-to-go, bootstrapped with γ^(T−t) V(s_T) at "
        "the end of the rollout. Does each step multiply by γλ (not λ, not γ²λ)?"))

    cases.append(_gae_case(
        "every step ends an episode (all done): Â_t = δ_t",
        (r, v, nv, zeros(6, 3) + 1, 0.99, 0.95), r + 0.99 * nv - v,
        "when every step ends an episode, Â_t = δ_t = r_t + γ next_values[t] − values[t]: multiply the "
        "Â_{t+1} you carry back by (1 − done_t), but leave next_values as it is (it is already 0 after a "
        "termination)."))

    # An episode terminates at t = 1 (V(s_2) = 0 in next_values); a new one starts at t = 2 with V = 10.
    args = (col(1.0, 1.0, 1.0, 1.0), col(2.0, 1.0, 10.0, 9.0), col(1.0, 0.0, 9.0, 8.0),
            col(0.0, 1.0, 0.0, 0.0), 0.5, 1.0)
    cases.append(_gae_case(
        "a termination mid-rollout: nothing after it counts",
        args, brute_force_gae(*args),
        "the advantage before a termination must not include the next episode: V(s_{t+1}) is "
        "next_values[t] (0 after a termination), never values[t+1], and Â_{t+1} is cut by (1 − done_t)."))

    # A time-limit truncation at t = 1: done = 1, but next_values[1] = V(final observation) = 4.
    args = (col(1.0, 1.0, 1.0), col(2.0, 3.0, 10.0), col(3.0, 4.0, 9.0), col(0.0, 1.0, 0.0), 0.5, 0.8)
    cases.append(_gae_case(
        "a truncation mid-rollout: δ_t keeps γ V(final observation)", args, brute_force_gae(*args),
        "on a truncation done_t = 1 but next_values[t] is V(final observation), not 0: use it as it is in "
        "δ_t (do not multiply it by 1 − done_t); done_t only stops the sum Σ (γλ)^l δ_{t+l}."))

    for T, N, gamma, lam, p_done in [(17, 5, 0.99, 0.95, 0.2), (40, 3, 0.9, 0.7, 0.1), (9, 8, 1.0, 0.5, 0.3)]:
        args = (_random(g, T, N), _random(g, T, N), _random(g, T, N),
                (torch.rand(T, N, generator=g) < p_done).double(), gamma, lam)
        cases.append(_gae_case(
            f"random T={T}, N={N}, γ={gamma}, λ={lam}, {p_done:.0%} dones: against Σ (γλ)^l δ_{{t+l}}",
            args, brute_force_gae(*args),
            "compare one column with the definition Â_t = Σ_l (γλ)^l δ_{t+l}, the sum stopping after a "
            "done. Are the N envs independent (no mixing across columns)?"))

    def float32_case(fn):
        args = tuple(_random(g, 5, 2).float() for _ in range(3)) + (torch.tensor(
            [[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]], dtype=torch.float32), 0.99, 0.95)
        expected = brute_force_gae(*args)
        advantages, returns = _gae_outputs(fn, tuple(a.clone() if isinstance(a, Tensor) else a for a in args))
        for name, x in [("advantages", advantages), ("returns", returns)]:
            if x.dtype != torch.float32 or x.shape != (5, 2):
                return (f"{name} is {x.dtype} {list(x.shape)}; for float32 [5, 2] inputs it must be "
                        "float32 [5, 2].\nhint: create new tensors with torch.zeros_like(rewards).")
        return _compare("advantages", advantages, expected, "float32 must give the same numbers, to float32 "
                        "precision.", rtol=1e-4, atol=1e-5)
    cases.append(Case("float32 inputs give float32 [T, N] outputs", float32_case))
    cases.append(_inputs_unchanged_case(
        lambda: (*(_random(g, 4, 2) for _ in range(3)), torch.tensor([[0.0, 1], [1, 0], [0, 0], [0, 1]],
                                                                     dtype=torch.float64), 0.99, 0.95),
        ("rewards", "values", "next_values", "dones", "gamma", "gae_lambda")))
    return cases


# --- reward_to_go: G_t = Σ_{l≥0} γ^l r_{t+l}, cut at episode ends (Williams 1992; Spinning Up) -------

def brute_force_reward_to_go(rewards: Tensor, dones: Tensor, gamma: float) -> Tensor:
    """G_t = Σ_{k=t}^{end} γ^(k−t) r_k, where ``end`` is the first step ≥ t with done = 1 (or T−1),
    summed directly. Inputs ``[T, N]``; returns ``[T, N]`` float64."""
    T, N = rewards.shape
    r, d = rewards.tolist(), dones.tolist()
    returns = [[0.0] * N for _ in range(T)]
    for n in range(N):
        for t in range(T):
            for k in range(t, T):
                returns[t][n] += gamma ** (k - t) * r[k][n]
                if d[k][n]:
                    break
    return torch.tensor(returns, dtype=torch.float64)


def _reward_to_go_case(name: str, args: tuple, expected: Tensor, hint: str) -> Case:
    def run(fn):
        out = _tensor(_call(fn, *(a.clone() if isinstance(a, Tensor) else a for a in args)), "returns")
        return _compare("returns", out, expected, hint)
    return Case(name, run)


def _reward_to_go_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    col = lambda *xs: torch.tensor(xs, dtype=torch.float64).unsqueeze(1)
    zeros = lambda T, N: torch.zeros(T, N, dtype=torch.float64)
    cases = [_reward_to_go_case(
        "by hand: r = (1, 2, 3), γ = 0.5, one episode ending at t = 2 → G = (2.75, 3.5, 3)",
        (col(1.0, 2.0, 3.0), col(0.0, 0.0, 1.0), 0.5), col(2.75, 3.5, 3.0),
        "G_t = r_t + γ (1 − done_t) G_{t+1}, computed backwards from the last step; the reward of the step "
        "that ends the episode counts.")]
    r = _random(g, 1, 5)
    cases.append(_reward_to_go_case("T = 1: G_0 = r_0", (r, zeros(1, 5), 0.99), r,
                                    "one step: the reward-to-go is that step's reward; no bootstrapping."))
    r = _random(g, 7, 3)
    cases.append(_reward_to_go_case("γ = 0: G_t = r_t", (r, zeros(7, 3), 0.0), r,
                                    "with γ = 0 only the current reward counts."))
    cases.append(_reward_to_go_case(
        "γ = 1 and no episode end: G_t = r_t + … + r_{T−1}", (r, zeros(7, 3), 1.0),
        r.flip(0).cumsum(0).flip(0),
        "the sum runs forward in time from t to the end: G_t is a reversed cumulative sum."))
    cases.append(_reward_to_go_case(
        "every step ends an episode (all done): G_t = r_t", (r, zeros(7, 3) + 1, 0.99), r,
        "after a done the next step belongs to a new episode: multiply G_{t+1} by (1 − done_t)."))
    args = (col(1.0, 1.0, 1.0, 1.0, 1.0), col(0.0, 1.0, 0.0, 0.0, 0.0), 0.5)
    cases.append(_reward_to_go_case(
        "an episode ends at t = 1: G_0 = 1 + 0.5 · 1, and the new episode's rewards do not count",
        args, col(1.5, 1.0, 1.75, 1.5, 1.0),
        "cut the sum at dones: the reward of the done step counts, the steps after it do not "
        "(G_t = r_t + γ (1 − done_t) G_{t+1})."))
    for T, N, gamma, p_done in [(15, 4, 0.99, 0.2), (30, 2, 0.9, 0.1), (8, 6, 1.0, 0.4)]:
        args = (_random(g, T, N), (torch.rand(T, N, generator=g) < p_done).double(), gamma)
        cases.append(_reward_to_go_case(
            f"random T={T}, N={N}, γ={gamma}, {p_done:.0%} dones: against the sum Σ γ^l r_{{t+l}}",
            args, brute_force_reward_to_go(*args),
            "compare one column with the definition G_t = Σ_l γ^l r_{t+l}, the sum stopping after a done; "
            "there is no bootstrapping at the end of the rollout."))

    def float32_case(fn):
        rewards, dones = _random(g, 6, 2).float(), torch.zeros(6, 2)
        out = _tensor(_call(fn, rewards, dones, 0.9), "returns")
        if out.dtype != torch.float32 or out.shape != (6, 2):
            return (f"returns is {out.dtype} {list(out.shape)}; for float32 [6, 2] inputs it must be float32 "
                    "[6, 2].\nhint: create the result with torch.zeros_like(rewards).")
        return _compare("returns", out, brute_force_reward_to_go(rewards, dones, 0.9),
                        "float32 must give the same numbers, to float32 precision.", 1e-4, 1e-5)
    cases.append(Case("float32 inputs give float32 [T, N] returns", float32_case))
    cases.append(_inputs_unchanged_case(
        lambda: (_random(g, 5, 3), torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]],
                                                dtype=torch.float64), 0.9), ("rewards", "dones", "gamma")))
    return cases


# --- clipped_surrogate: −L^CLIP, PPO eq. 7 ----------------------------------------------------------

def reference_surrogate(ratio: list[float], advantages: list[float], clip_range: float
                        ) -> tuple[float, list[float]]:
    """−L^CLIP = −(1/B) Σ_i min(ρ_i Â_i, clip(ρ_i, 1−ε, 1+ε) Â_i), and its analytic gradient with respect
    to each log π_θ(a_i|s_i): −ρ_i Â_i / B where the unclipped term is the smaller, 0 where the clip is
    active (ρ_i > 1+ε with Â_i > 0, or ρ_i < 1−ε with Â_i < 0). Plain Python floats."""
    B = len(ratio)
    loss, grad = 0.0, []
    for rho, a in zip(ratio, advantages, strict=True):
        clipped = min(max(rho, 1 - clip_range), 1 + clip_range)
        loss -= min(rho * a, clipped * a) / B
        clip_active = (a > 0 and rho > 1 + clip_range) or (a < 0 and rho < 1 - clip_range)
        grad.append(0.0 if clip_active else -rho * a / B)
    return loss, grad


def _surrogate_case(name: str, ratio: list[float], advantages: list[float], clip_range: float, hint: str,
                    check_gradient: bool = True) -> Case:
    """Call the student's loss with log π_θ = log ρ (requiring grad) and log π_old = 0; compare the loss
    with :func:`reference_surrogate` and, if ``check_gradient``, its autograd gradient with the analytic
    one."""
    def run(fn):
        log_probs = torch.tensor(ratio, dtype=torch.float64).log().requires_grad_()
        old_log_probs = torch.zeros(len(ratio), dtype=torch.float64)
        adv = torch.tensor(advantages, dtype=torch.float64)
        loss = _tensor(_call(fn, log_probs, old_log_probs, adv, clip_range), "the loss")
        expected_loss, expected_grad = reference_surrogate(ratio, advantages, clip_range)
        failure = _compare_loss(loss, expected_loss, len(ratio), hint)
        if failure or not check_gradient:
            return failure
        if not loss.requires_grad:
            return ("the loss carries no gradient.\nhint: build it from log_probs with torch operations "
                    "only: no .item(), .detach(), .numpy() or torch.no_grad().")
        (grad,) = torch.autograd.grad(loss, log_probs, allow_unused=True)
        grad = torch.zeros_like(log_probs) if grad is None else grad
        return _compare("d loss / d log_probs", grad, torch.tensor(expected_grad, dtype=torch.float64), hint,
                        rtol=1e-6, atol=1e-10)
    return Case(name, run)


def _clipped_surrogate_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    eps = 0.2
    adv = [1.0, -2.0, 0.5, 3.0]
    cases = [
        _surrogate_case("ρ = 1 (log π_θ = log π_old): loss = −mean(Â), gradient −Â/B", [1.0] * 4, adv,
                        eps, "ρ = exp(log π_θ − log π_old) is 1 here, so −L^CLIP = −mean(Â)."),
        _surrogate_case("Â = 0: loss 0 and zero gradient", [0.5, 1.0, 1.1, 1.7], [0.0] * 4, eps,
                        "every term is proportional to Â."),
        _surrogate_case("ρ exactly 1 − ε and 1 + ε: both terms are equal, loss = −mean(ρ Â)",
                        [0.8, 1.2, 0.8, 1.2], adv, eps,
                        "clip(ρ, 1 − ε, 1 + ε) leaves ρ = 1 ± ε as it is.", check_gradient=False),
        _surrogate_case("clip active (ρ > 1 + ε with Â > 0, ρ < 1 − ε with Â < 0): zero gradient",
                        [1.5, 0.5, 1.25, 0.7], [1.0, -1.0, 2.0, -0.5], eps,
                        "once ρ has moved past the clip in the direction Â favours, "
                        "min(ρÂ, clip(ρ, 1−ε, 1+ε)Â) picks the clipped, constant term: no gradient. Take "
                        "the min of the two terms, and clip ρ, not Â."),
        _surrogate_case("ρ outside [1 − ε, 1 + ε] against Â: the unclipped term is the min, gradient "
                        "−ρÂ/B",
                        [1.5, 0.5, 1.3, 0.6], [-1.0, 1.0, -2.0, 0.5], eps,
                        "L^CLIP is a pessimistic bound: when the change made things worse, the min keeps the "
                        "unclipped ρÂ, so the gradient pulls ρ back. Use min, not max, and keep the "
                        "unclipped term inside it."),
    ]
    for B, clip_range in [(64, 0.2), (33, 0.1)]:
        ratio = (0.5 + torch.rand(B, generator=g, dtype=torch.float64)).tolist()
        advantages = torch.randn(B, generator=g, dtype=torch.float64).tolist()
        cases.append(_surrogate_case(
            f"random B={B}, ε={clip_range}: loss against the formula, gradient against the analytic one",
            ratio, advantages, clip_range,
            "−L^CLIP = −mean(min(ρ Â, clip(ρ, 1−ε, 1+ε) Â)), with ρ = exp(log_probs − old_log_probs)."))

    def float32_case(fn):
        log_probs = (0.3 * torch.randn(10, generator=g)).requires_grad_()
        loss = _tensor(_call(fn, log_probs, torch.zeros(10), torch.randn(10, generator=g), 0.2), "the loss")
        if loss.shape != torch.Size([]) or loss.dtype != torch.float32:
            return (f"the loss is {loss.dtype} {list(loss.shape)}; for float32 [10] inputs it must be a "
                    "float32 scalar.\nhint: take the .mean() of the per-sample terms.")
        return None
    cases.append(Case("float32 [B] inputs give a float32 scalar", float32_case))
    cases.append(_inputs_unchanged_case(
        lambda: (-_random(g, 6, low=0.0), -_random(g, 6, low=0.0), _random(g, 6), 0.2),
        ("log_probs", "old_log_probs", "advantages", "clip_range")))
    return cases


# --- conjugate_gradient: solve A x = b from products A v (TRPO Appendix C) --------------------------

def _random_spd(g: torch.Generator, P: int) -> Tensor:
    """A random symmetric positive-definite ``[P, P]`` matrix with eigenvalues in [1, 10]."""
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    return Q @ torch.diag(1 + 9 * torch.rand(P, generator=g, dtype=torch.float64)) @ Q.T


def krylov_minimiser(A: Tensor, b: Tensor, k: int) -> Tensor:
    """The x that minimises ½ xᵀA x − bᵀx over the Krylov subspace span{b, Ab, …, A^(k−1) b}: where k
    steps of conjugate gradient from x = 0 land in exact arithmetic. Solved directly in an orthonormal
    basis of the subspace."""
    basis = [b]
    for _ in range(k - 1):
        basis.append(A @ basis[-1])
    Q, _ = torch.linalg.qr(torch.stack(basis, dim=1))
    return Q @ torch.linalg.solve(Q.T @ A @ Q, Q.T @ b)


def _cg_case(name: str, A: Tensor, b: Tensor, iterations: int, expected: Tensor, hint: str,
             rtol: float = 1e-6, atol: float = 1e-9) -> Case:
    def run(fn):
        products = []

        def Avp(v):
            products.append(1)
            return A @ v

        x = _tensor(_call(fn, Avp, b.clone(), iterations), "x")
        if len(products) > iterations:
            return (f"it called Avp {len(products)} times with iterations={iterations}.\nhint: each "
                    "iteration needs one product A p; reuse it for both α and the residual update.")
        return _compare("x", x, expected, hint, rtol=rtol, atol=atol)
    return Case(name, run)


def _conjugate_gradient_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    update_hint = ("Each iteration: α = rᵀr / pᵀAp, x ← x + α p, r ← r − α A p, "
                   "β = r_newᵀr_new / r_oldᵀr_old, p ← r + β p; start from x = 0, r = p = b.")
    vec = lambda *xs: torch.tensor(xs, dtype=torch.float64)
    eye = lambda P: torch.eye(P, dtype=torch.float64)
    cases = [_cg_case("b = 0: x = 0 (no 0/0)", eye(3), vec(0.0, 0.0, 0.0), 3, vec(0.0, 0.0, 0.0),
                      "with b = 0, rᵀr = 0 and α = 0/0: stop as soon as rᵀr is (close to) 0."),
             _cg_case("A = I: one iteration gives x = b", eye(4), vec(1.0, -2.0, 0.5, 3.0), 1,
                      vec(1.0, -2.0, 0.5, 3.0), "from x = 0, r = p = b: α = bᵀb / bᵀb = 1, so x = b."),
             _cg_case("P = 1: x = b / a", vec(4.0).reshape(1, 1), vec(2.0), 1, vec(0.5),
                      "one step along p = b with α = rᵀr / pᵀAp solves a 1×1 system exactly."),
             _cg_case("diagonal A = diag(1, 2, 5), 3 iterations: x = b / diag(A)",
                      torch.diag(vec(1.0, 2.0, 5.0)), vec(1.0, 1.0, 1.0), 3, vec(1.0, 0.5, 0.2),
                      "P iterations solve a P×P system. " + update_hint)]
    for P in (5, 30):
        A, b = _random_spd(g, P), torch.randn(P, generator=g, dtype=torch.float64)
        # Stopping once ‖r‖² ≤ 1e-10 (as minippo does) leaves an error of up to ~1e-5: allowed.
        cases.append(_cg_case(f"random SPD A, P = {P}, {P} iterations: x = torch.linalg.solve(A, b)",
                              A, b, P, torch.linalg.solve(A, b), update_hint, rtol=1e-4, atol=1e-5))
    A, b = _random_spd(g, 20), torch.randn(20, generator=g, dtype=torch.float64)
    for k in (2, 3, 5):
        cases.append(_cg_case(
            f"stopped early: {k} iterations on P = 20: x minimises ½xᵀAx − bᵀx over span{{b, Ab, …}}",
            A, b, k, krylov_minimiser(A, b, k),
            "after k iterations x is the best point of span{b, Ab, …, A^(k−1) b}; steepest descent (p ← r) "
            "or a residual that is not updated (r ← r − α A p) lands elsewhere. " + update_hint))

    def float32_case(fn):
        A = _random_spd(g, 6).float()
        x = _tensor(_call(fn, lambda v: A @ v, torch.randn(6, generator=g), 6), "x")
        if x.dtype != torch.float32 or x.shape != (6,):
            return (f"x is {x.dtype} {list(x.shape)}; for a float32 [6] b it must be float32 [6].\nhint: "
                    "start from x = torch.zeros_like(b).")
        return None
    cases.append(Case("a float32 [P] b gives a float32 [P] x", float32_case))
    A6 = _random_spd(g, 6)
    cases.append(_inputs_unchanged_case(lambda: (lambda v: A6 @ v, _random(g, 6), 4),
                                        ("Avp", "b", "iterations")))
    return cases


# --- bradley_terry: −log σ(r_w − r_l), averaged over pairs (InstructGPT eq. 1) ----------------------

def reference_bradley_terry(chosen: list[float], rejected: list[float]
                            ) -> tuple[float, list[float], list[float]]:
    """The mean of −log σ(d_i) = log(1 + e^(−d_i)), d_i = chosen_i − rejected_i, computed stably, and its
    gradients: d/d chosen_i = −σ(−d_i)/B, d/d rejected_i = +σ(−d_i)/B. Plain Python floats."""
    B = len(chosen)
    d = [c - r for c, r in zip(chosen, rejected, strict=True)]
    softplus = lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))  # log(1 + e^x) without overflow
    sigmoid = lambda x: math.exp(-softplus(-x))
    loss = sum(softplus(-di) for di in d) / B
    return loss, [-sigmoid(-di) / B for di in d], [sigmoid(-di) / B for di in d]


def _bradley_terry_case(name: str, chosen: list[float], rejected: list[float], hint: str,
                        dtype: torch.dtype = torch.float64, rtol: float = 1e-6) -> Case:
    def run(fn):
        c = torch.tensor(chosen, dtype=dtype, requires_grad=True)
        r = torch.tensor(rejected, dtype=dtype, requires_grad=True)
        loss = _tensor(_call(fn, c, r), "the loss")
        expected, grad_chosen, grad_rejected = reference_bradley_terry(chosen, rejected)
        failure = _compare_loss(loss, expected, len(chosen), hint, rtol=rtol)
        if failure:
            return failure
        if not loss.requires_grad:
            return ("the loss carries no gradient.\nhint: use torch operations only: no .item(), .detach() "
                    "or torch.no_grad().")
        gc, gr = torch.autograd.grad(loss, (c, r), allow_unused=True)
        gc = torch.zeros_like(c) if gc is None else gc
        gr = torch.zeros_like(r) if gr is None else gr
        as64 = lambda xs: torch.tensor(xs, dtype=torch.float64)
        return (_compare("d loss / d chosen_scores", gc, as64(grad_chosen), hint, rtol=1e-5, atol=1e-8)
                or _compare("d loss / d rejected_scores", gr, as64(grad_rejected), hint, rtol=1e-5,
                            atol=1e-8))
    return Case(name, run)


def _bradley_terry_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    formula = "loss = −mean(log σ(chosen − rejected)): the chosen response should score higher."
    cases = [
        _bradley_terry_case("equal scores: loss = log 2, gradient ∓1/(2B)", [0.3, -1.0, 2.0],
                            [0.3, -1.0, 2.0], "σ(0) = 1/2, so each pair contributes −log(1/2) = log 2. "
                            + formula),
        _bradley_terry_case("chosen far above rejected (margin 20): loss ≈ e^(−20)", [10.0, 12.0],
                            [-10.0, -8.0], "a pair ranked the right way by a wide margin is almost free. "
                            + formula),
        _bradley_terry_case("chosen below rejected by 120, float32: loss = 120, finite", [-60.0], [60.0],
                            "log(sigmoid(−120)) underflows to log 0 = −inf in float32; use "
                            "torch.nn.functional.logsigmoid(d), which is exact for large |d|.",
                            dtype=torch.float32, rtol=1e-5),
    ]
    for B in (16, 5):
        chosen = (2 * torch.randn(B, generator=g, dtype=torch.float64)).tolist()
        rejected = (2 * torch.randn(B, generator=g, dtype=torch.float64)).tolist()
        cases.append(_bradley_terry_case(f"random B={B}: loss against the formula, gradients against the "
                                         "analytic ones", chosen, rejected, formula))

    def mean_case(fn):
        chosen, rejected = torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([0.5, 0.5, 0.5, 0.5])
        one = _tensor(_call(fn, chosen[:1], rejected[:1]), "the loss")
        four = _tensor(_call(fn, chosen, rejected), "the loss")
        if one.shape != torch.Size([]) or four.shape != torch.Size([]):
            return ("the loss must be a scalar (a 0-dim tensor).\nhint: average the per-pair terms with "
                    ".mean().")
        if not math.isclose(one.item(), four.item(), rel_tol=1e-5):
            return (f"four copies of a pair give {four.item():.6g}, one gives {one.item():.6g}.\nhint: "
                    "average over pairs (.mean()), so that the loss does not grow with the batch size.")
        return None
    cases.append(Case("a mean over pairs: four copies of one pair give that pair's loss", mean_case))

    def float32_case(fn):
        loss = _tensor(_call(fn, torch.randn(8, generator=g), torch.randn(8, generator=g)), "the loss")
        if loss.dtype != torch.float32:
            return f"the loss is {loss.dtype}; for float32 inputs it must be float32."
        return None
    cases.append(Case("float32 [B] inputs give a float32 scalar", float32_case))
    cases.append(_inputs_unchanged_case(lambda: (_random(g, 5), _random(g, 5)),
                                        ("chosen_scores", "rejected_scores")))
    return cases


# --- kl_penalised_rewards: per-token rewards of InstructGPT eq. 2 -----------------------------------

def brute_force_kl_rewards(log_probs: Tensor, ref_log_probs: Tensor, scores: Tensor, ends: Tensor,
                           beta: float) -> Tensor:
    """r_t = −β (log π − log π_ref) for t ≤ ends[n], plus scores[n] at t = ends[n], and 0 after: one loop
    per position. Returns ``[T, N]`` float64."""
    T, N = log_probs.shape
    lp, ref, s, e = log_probs.tolist(), ref_log_probs.tolist(), scores.tolist(), ends.tolist()
    rewards = [[0.0] * N for _ in range(T)]
    for n in range(N):
        for t in range(e[n] + 1):
            rewards[t][n] = -beta * (lp[t][n] - ref[t][n]) + (s[n] if t == e[n] else 0.0)
    return torch.tensor(rewards, dtype=torch.float64)


def _kl_case(name: str, args: tuple, expected: Tensor, hint: str) -> Case:
    def run(fn):
        out = _tensor(_call(fn, *(a.clone() if isinstance(a, Tensor) else a for a in args)), "rewards")
        return _compare("rewards", out, expected, hint)
    return Case(name, run)


def _kl_penalised_rewards_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    T, N = 6, 4
    log_p = lambda: -3 * torch.rand(T, N, generator=g, dtype=torch.float64)
    lp, ref = log_p(), log_p()
    scores = torch.tensor([1.5, -0.5, 2.0, 0.25], dtype=torch.float64)
    ends = torch.tensor([5, 2, 0, 3])
    definition = ("r_t = −β (log π(a_t|s_t) − log π_ref(a_t|s_t)) for t ≤ end, plus the score at t = end, "
                  "and 0 after the end.")
    score_only = torch.zeros(T, N, dtype=torch.float64)
    score_only[ends, torch.arange(N)] = scores
    cases = [
        _kl_case("β = 0: the score at each response's last token, 0 elsewhere", (lp, ref, scores, ends, 0.0),
                 score_only, "with β = 0 there is no penalty; the reward model's score goes to the token at "
                             "t = ends[n] of column n only."),
        _kl_case("π = π_ref: no penalty, only the scores", (lp, lp.clone(), scores, ends, 0.5), score_only,
                 "log π − log π_ref = 0 everywhere, so only the scores remain."),
    ]
    last = torch.full((N,), T - 1)
    cases.append(_kl_case("every response ends at T − 1: the score on the last row",
                          (lp, ref, scores, last, 0.2), brute_force_kl_rewards(lp, ref, scores, last, 0.2),
                          "the score is added to the penalty of the last token; " + definition))
    first = torch.zeros(N, dtype=torch.long)
    cases.append(_kl_case("every response ends at 0: one-token responses, 0 from t = 1 on",
                          (lp, ref, scores, first, 0.2), brute_force_kl_rewards(lp, ref, scores, first, 0.2),
                          "the tokens after the end of the response are padding: no reward and no penalty. "
                          + definition))
    cases.append(_kl_case("ends (5, 2, 0, 3), β = 0.1: against a loop over positions",
                          (lp, ref, scores, ends, 0.1), brute_force_kl_rewards(lp, ref, scores, ends, 0.1),
                          "the penalty is subtracted (a policy that drifts from π_ref pays), the score is "
                          "added at its own column's end, and nothing after the end. " + definition))
    T2, N2 = 12, 7
    lp2 = -3 * torch.rand(T2, N2, generator=g, dtype=torch.float64)
    ref2 = -3 * torch.rand(T2, N2, generator=g, dtype=torch.float64)
    scores2 = torch.randn(N2, generator=g, dtype=torch.float64)
    ends2 = torch.randint(0, T2, (N2,), generator=g)
    cases.append(_kl_case(f"random T={T2}, N={N2}, β = 0.3: against a loop over positions",
                          (lp2, ref2, scores2, ends2, 0.3),
                          brute_force_kl_rewards(lp2, ref2, scores2, ends2, 0.3), definition))

    def sums_case(fn):
        # InstructGPT eq. 2 for the whole response: Σ_t r_t = score − β Σ_{t ≤ end} log(π/π_ref).
        out = _tensor(_call(fn, lp2.clone(), ref2.clone(), scores2.clone(), ends2.clone(), 0.3), "rewards")
        if out.shape != (T2, N2):
            return f"rewards has shape {list(out.shape)}, expected {[T2, N2]}."
        expected = scores2.clone()
        for n in range(N2):
            expected[n] -= 0.3 * sum(lp2[t, n].item() - ref2[t, n].item() for t in range(int(ends2[n]) + 1))
        return _compare("the sum over t of rewards[:, n]", out.sum(0), expected,
                        "summed over a response the rewards are score − β · (log π − log π_ref summed over "
                        "its tokens): InstructGPT's objective, eq. 2. Is the sign of the penalty minus?")
    cases.append(Case("each response's rewards sum to score − β Σ_{t ≤ end} log(π/π_ref)", sums_case))

    def float32_case(fn):
        out = _tensor(_call(fn, lp.float(), ref.float(), scores.float(), ends, 0.1), "rewards")
        if out.dtype != torch.float32 or out.shape != (T, N):
            return (f"rewards is {out.dtype} {list(out.shape)}; for float32 [{T}, {N}] inputs it must be "
                    f"float32 [{T}, {N}].")
        return None
    cases.append(Case("float32 inputs give float32 [T, N] rewards", float32_case))
    cases.append(_inputs_unchanged_case(lambda: (log_p(), log_p(), scores.clone(), ends.clone(), 0.1),
                                        ("log_probs", "ref_log_probs", "scores", "ends", "beta")))
    return cases


# --- The exercises; the model solutions are minippo's own functions --------------------------------

def _solution_reward_to_go(rewards, dones, gamma):
    # With V ≡ 0 and λ = 1 the λ-return is the discounted reward-to-go, cut at dones, not bootstrapped.
    zeros = torch.zeros_like(rewards)
    return compute_gae(rewards, zeros, zeros, dones, gamma, 1.0)[1]


def _solution_clipped_surrogate(log_probs, old_log_probs, advantages, clip_range):
    return clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_range)[0]  # without the ratio


def _solution_conjugate_gradient(Avp, b, iterations):
    return conjugate_gradient(Avp, b, iterations)[0]  # without the residual norm


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("gae", "compute_gae", ("rewards", "values", "next_values", "dones", "gamma", "gae_lambda"),
             "(advantages, returns)", compute_gae, _gae_cases),
    Exercise("reward_to_go", "reward_to_go", ("rewards", "dones", "gamma"), "returns", _solution_reward_to_go,
             _reward_to_go_cases),
    Exercise("clipped_surrogate", "clipped_surrogate_loss",
             ("log_probs", "old_log_probs", "advantages", "clip_range"), "loss", _solution_clipped_surrogate,
             _clipped_surrogate_cases),
    Exercise("conjugate_gradient", "conjugate_gradient", ("Avp", "b", "iterations"), "x",
             _solution_conjugate_gradient, _conjugate_gradient_cases),
    Exercise("bradley_terry", "bradley_terry_loss", ("chosen_scores", "rejected_scores"), "loss",
             bradley_terry_loss, _bradley_terry_cases),
    Exercise("kl_penalised_rewards", "kl_penalised_rewards",
             ("log_probs", "ref_log_probs", "scores", "ends", "beta"), "rewards",
             kl_penalised_rewards, _kl_penalised_rewards_cases),
]}


# --- Running a submission in a child process ------------------------------------------------------

def _load_function(exercise: Exercise, path: str) -> Callable:
    """Import ``path`` as a module and return its function ``exercise.function``.

    Raises:
        SubmissionError: a syntax error, an exception while the file runs, no such function, or one that
            does not take the exercise's parameters.
    """
    loader = importlib.machinery.SourceFileLoader("submission", path)  # any suffix, read as Python source
    spec = importlib.util.spec_from_loader("submission", loader)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise SubmissionError(f"syntax error on line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # noqa: BLE001 (the student's top-level code, even sys.exit)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        where = f" on line {frames[-1].lineno}" if frames else ""
        raise SubmissionError(f"the file raised {type(e).__name__}{where} while loading: "
                              f"{' '.join(str(e).split())[:200]}") from None
    fn = getattr(module, exercise.function, None)
    if not callable(fn):
        defined = sorted(n for n, v in vars(module).items()
                         if inspect.isfunction(v) and v.__module__ == "submission")
        also = f" (it defines {', '.join(defined)})" if defined else ""
        raise SubmissionError(f"it defines no function {exercise.function}{also}; the exercise asks for "
                              f"{exercise.signature}")
    try:
        inspect.signature(fn).bind(*exercise.parameters)
    except TypeError:
        raise SubmissionError(f"{exercise.function}{inspect.signature(fn)} does not take the exercise's "
                              f"{len(exercise.parameters)} parameters ({', '.join(exercise.parameters)})"
                              ) from None
    except ValueError:  # no signature to inspect (a builtin): let the calls decide
        pass
    return fn


def _child(exercise_name: str, path: str | None, conn) -> None:
    """Runs in the child process: load the submission (or take the model solution) and run every case.
    Sends ``("started", number of cases)``, then ``("case", name)`` before and ``("result", failure)``
    after each case, and ``("done", None)``; or ``("error", message)`` once the submission cannot be
    graded."""
    torch.set_num_threads(1)
    exercise = EXERCISES[exercise_name]
    cases = exercise.cases()
    conn.send(("started", len(cases)))
    # What the submission prints would garble the grader's report; it is dropped.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            fn = exercise.solution if path is None else _load_function(exercise, path)
            for case in cases:
                conn.send(("case", case.name))
                conn.send(("result", case.run(fn)))
        except SubmissionError as e:
            conn.send(("error", str(e)))
        except BaseException as e:  # noqa: BLE001 (the student's sys.exit, or a bug of the grader itself)
            conn.send(("error", f"grading stopped on {type(e).__name__}: {' '.join(str(e).split())[:200]}"))
        else:
            conn.send(("done", None))
    conn.close()


def _context() -> multiprocessing.context.BaseContext:
    """"forkserver" where the platform has it: its server imports torch once, and each submission runs in a
    fresh fork of it (about 0.03 s instead of 2 s for a new interpreter). Windows has only "spawn"."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_child(report: Report, path: str | None, timeout: float) -> None:
    """Run :func:`_child` for ``report.exercise`` and fill ``report`` from what it sends. The child is
    killed ``timeout`` seconds after it has started (its own start, importing torch, is not counted)."""
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(report.exercise, path, sender), daemon=True)
    child.start()
    sender.close()
    case, deadline = None, None
    in_case = lambda: f" (in case {len(report.results) + 1}: {case})" if case else ""
    try:
        while True:
            remaining = STARTUP_LIMIT if deadline is None else deadline - time.monotonic()
            if remaining <= 0 or not receiver.poll(remaining):
                if deadline is None:
                    report.error = f"the grader's child process did not start within {STARTUP_LIMIT:g} s"
                else:
                    report.error = (f"did not finish within {timeout:g} s{in_case() or ' (while loading)'} "
                                    "and was stopped: an endless loop? (--timeout sets the limit)")
                return
            try:
                kind, payload = receiver.recv()
            except EOFError:  # the child died: os._exit, a crash of the interpreter, ...
                child.join(1)
                if deadline is None:  # before it could start: multiprocessing failed to re-import __main__
                    report.error = (f"the grader's child process failed to start (exit code "
                                    f"{child.exitcode}). Calling minippo.check.grade from a script? Call "
                                    "it under `if __name__ == \"__main__\":`, as multiprocessing requires.")
                else:
                    report.error = f"ended the grader's process (exit code {child.exitcode}){in_case()}"
                return
            if kind == "started":
                report.total, deadline = payload, time.monotonic() + timeout
            elif kind == "case":
                case = payload
            elif kind == "result":
                report.results.append((case, payload))
                case = None
            elif kind == "error":
                report.error = payload + in_case()
                return
            else:  # "done"
                return
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()


# --- Reports, and the command ---------------------------------------------------------------------

@dataclass
class Report:
    """The grade of one submission (``source``: its path): each case's ``(name, failure)`` in order (failure
    None: passed), the number of cases, and ``error`` (one line) when the submission could not be
    graded."""

    exercise: str
    source: str
    total: int = 0
    results: list[tuple[str, str | None]] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> int:
        return sum(failure is None for _, failure in self.results)

    @property
    def ok(self) -> bool:
        return self.error is None and self.total > 0 and self.passed == self.total

    @property
    def status(self) -> str:
        """One line for a class table: "pass", the numbers of the failed cases, or the error."""
        if self.error:
            return f"error: {self.error}"
        failed = [str(k) for k, (_, failure) in enumerate(self.results, 1) if failure is not None]
        return "pass" if not failed else "FAIL: case " + ", ".join(failed)

    def show(self, with_error: bool = True) -> None:
        """Each case as PASS or FAIL (with what was wrong and the hint), then the score or the error."""
        if self.results:
            print(f"{self.exercise}: {EXERCISES[self.exercise].signature}, from {self.source}")
        for k, (name, failure) in enumerate(self.results, 1):
            print(f"  PASS  {k:2d}. {name}" if failure is None else f"  FAIL  {k:2d}. {name}")
            for line in (failure or "").splitlines():
                print(textwrap.fill(line, width=110, initial_indent=" " * 13, subsequent_indent=" " * 19))
        if self.error and with_error:
            print(f"error: {self.source}: {self.error}")
        elif not self.error:
            print(f"{self.passed}/{self.total} cases passed" + (": well done." if self.ok else "."))


def grade(exercise: str, path: str | Path | None = None, *, solution: bool = False,
          timeout: float = DEFAULT_TIMEOUT, verbose: bool = True) -> Report:
    """Grade the function ``EXERCISES[exercise].function`` defined in the Python file ``path`` (or, with
    ``solution=True``, minippo's own function) on every case of the exercise, in a child process.

    Args:
        exercise: a key of :data:`EXERCISES`. path: the student's ``.py`` file.
        solution: grade the model solution (the library's function) instead of a file.
        timeout: seconds allowed for loading the file and running every case; then the child is killed.
        verbose: print the report (:meth:`Report.show`).

    Returns:
        a :class:`Report`; ``report.ok`` is True only if every case passed. A submission that cannot be
        graded (no such file, a syntax error, no such function, an exception, a wrong return type, the time
        limit) gives ``report.error``, one line; nothing is raised for it.

    Raises:
        MinippoError: ``exercise`` is unknown, or neither / both of ``path`` and ``solution`` are given.

    The child process is started by :mod:`multiprocessing`, which imports the caller's ``__main__`` module
    in it: a script that calls ``grade`` must do so under ``if __name__ == "__main__":``. (Notebooks and
    the ``minippo`` command need nothing.)
    """
    if exercise not in EXERCISES:
        raise MinippoError(f"Unknown exercise {exercise!r}; choose one of {', '.join(EXERCISES)}.")
    if (path is None) != solution:
        raise MinippoError("Give either a submission file or solution=True (--solution), not both or "
                           "neither.")
    report = Report(exercise, "minippo's model solution" if solution else str(path))
    if not solution and not Path(path).is_file():
        report.error = "no such file"
    else:
        _run_child(report, None if solution else str(Path(path).resolve()), timeout)
    if verbose:
        report.show()
    return report


def grade_folder(exercise: str, folder: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> list[Report]:
    """Grade every ``*.py`` file of ``folder`` (a class's submissions), each in its own child process, and
    print a table: one row per file, with the cases passed and the failed cases or the error.

    Raises:
        MinippoError: unknown exercise, or ``folder`` holds no ``.py`` file.
    """
    files = sorted(Path(folder).glob("*.py"))
    if not files:
        raise MinippoError(f"{folder} holds no .py file to grade.")
    reports = [grade(exercise, file, timeout=timeout, verbose=False) for file in files]
    names = [case.name for case in EXERCISES[exercise].cases()]
    print(f"{exercise}: {EXERCISES[exercise].signature}; the cases:")
    for k, name in enumerate(names, 1):
        print(f"  {k:2d}. {name}")
    width = max(len("submission"), *(len(f.name) for f in files))
    print(f"\n{'submission':<{width}}  passed  status")
    for file, report in zip(files, reports, strict=True):
        print(f"{file.name:<{width}}  {report.passed:>2}/{report.total:<3}  {report.status}")
    print(f"\n{sum(r.ok for r in reports)} of {len(reports)} submissions pass every case.")
    return reports


def cmd_check(args) -> int:
    """``minippo check EXERCISE FILE|DIR [--solution] [--timeout S]``.

    Returns 0 if every case passes; 1 if a case fails, or if any submission of DIR fails or cannot be graded.

    Raises:
        MinippoError: FILE cannot be graded (the one-line reason), DIR holds no ``.py`` file, or the
            arguments do not fit together (exit status 2).
    """
    if args.timeout <= 0:
        raise MinippoError(f"--timeout must be positive, got {args.timeout:g}.")
    if args.solution and args.path is not None:
        raise MinippoError("--solution grades minippo's own function: give no FILE or DIR with it.")
    if args.path is None and not args.solution:
        raise MinippoError(f"Give the student's file (or a folder of them) to grade, e.g. minippo check "
                           f"{args.exercise} my_{args.exercise}.py, or --solution for minippo's own "
                           "function.")
    if args.path is not None and Path(args.path).is_dir():
        reports = grade_folder(args.exercise, args.path, timeout=args.timeout)
        return 0 if all(r.ok for r in reports) else 1
    report = grade(args.exercise, args.path, solution=args.solution, timeout=args.timeout, verbose=False)
    report.show(with_error=False)
    if report.error:
        raise MinippoError(f"{report.source}: {report.error}")
    return 0 if report.ok else 1
