"""Trust Region Policy Optimization (Schulman et al. 2015, "Trust Region Policy Optimization"), with GAE(γ, λ)
advantages and a separately fitted value function as in Schulman et al. 2016 ("High-Dimensional Continuous
Control Using Generalized Advantage Estimation", §6).

TRPO maximises the surrogate objective subject to a trust region on the mean KL divergence (TRPO eq. 12
and §6, with sample averages as in eq. 14)::

    maximise_θ  L(θ) = mean( π_θ(a|s) / π_old(a|s) · Â )    subject to  mean KL(π_old ‖ π_θ) ≤ KL_max

Linearising L and taking the KL to second order at θ_old gives the natural gradient step, solved without
ever forming the Fisher matrix F (TRPO Appendix C). Per iteration::

    g  = ∇θ L(θ_old)                                   policy gradient of the surrogate
    x  ≈ F⁻¹ g                                         conjugate gradient, using only products F v
    η  = sqrt(2 KL_max / xᵀ(F + νI)x)                  the step along x whose damped quadratic KL
                                                       model ½ (ηx)ᵀ(F + νI)(ηx) is KL_max
    line search: θ = θ_old + b^k η x, k = 0, 1, ..     first k with L(θ) > L(θ_old) and KL ≤ KL_max
                                                       (none: keep θ_old)
    V  ← value_iterations Adam steps on mean((V(s) − R)²)    (minippo.value_function, as VPG)

F v is the Hessian-vector product of the mean KL, by differentiating twice (TRPO Appendix C.1).

Symbols: ``B`` is the number of valid transitions in the batch, ``P`` the number of policy parameters
(the length of the flat parameter vector θ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .errors import check_finite, check_range
from .rollout import explained_variance, masked_mean, normalize_advantages
from .value_function import fit_value_function, split_parameters

# Defaults per environment. Keys are fields of TRPOConfig or of minippo.train.TrainConfig; "default" is
# used for any env not listed. Each tuned entry reached a near-solved return on seed 0 within its
# total_steps.
DEFAULTS: dict[str, dict] = {
    "default": dict(total_steps=1_000_000, num_envs=8, num_steps=512, gamma=0.99, gae_lambda=0.97,
                    max_kl=0.01, value_lr=1e-3, value_iterations=80),
    "CartPole-v1": dict(total_steps=100_000, num_envs=8, num_steps=256, gamma=0.99, gae_lambda=0.97,
                        max_kl=0.01, value_lr=1e-3, value_iterations=80),
    # Acrobot's reward is −1 per step until the first swing-up; after it a wider trust region lets the
    # policy follow quickly (seed 0 after 100k steps: −80 with KL_max = 0.03, −350 with KL_max = 0.01).
    "Acrobot-v1": dict(total_steps=200_000, num_envs=8, num_steps=256, gamma=0.99, gae_lambda=0.97,
                       max_kl=0.03, value_lr=1e-3, value_iterations=80, normalize_obs=True),
    # γ = 0.9: Pendulum's reward is dense and immediate; a short horizon gives low-variance advantages.
    "Pendulum-v1": dict(total_steps=200_000, num_envs=4, num_steps=1000, gamma=0.9, gae_lambda=0.95,
                        max_kl=0.01, value_lr=1e-3, value_iterations=80, normalize_reward=True),
    # MuJoCo: sb3-contrib's TRPO as rl-zoo3 runs it on Hopper-v4 and HalfCheetah-v4 (hyperparams/trpo.yml:
    # 2 envs x 1024 steps, gamma 0.99, lambda 0.95, 25 CG steps, damping 0.1, observations and rewards
    # normalised, KL_max 0.01 (sb3-contrib's default; 0.04 on HalfCheetah), and the critic fitted with
    # Adam 1e-3 for 20 epochs of minibatches of 128, i.e. 320 steps per batch of 2048).
    **{env_id: dict(total_steps=1_000_000, num_envs=2, num_steps=1024, gamma=0.99, gae_lambda=0.95,
                    max_kl=max_kl, cg_iterations=25, damping=0.1, value_lr=1e-3, value_iterations=320,
                    value_minibatch_size=128, normalize_obs=True, normalize_reward=True)
       for env_id, max_kl in (("Hopper-v5", 0.01), ("HalfCheetah-v5", 0.04))},
}


@dataclass
class TRPOConfig:
    """TRPO's hyperparameters, with typical ranges.

    max_kl                KL_max, the trust-region radius on the mean KL(π_old ‖ π_θ) (0.001 – 0.05).
    damping               ν added to F (F + νI) so conjugate gradient stays well conditioned (0.001 – 0.1).
    cg_iterations         conjugate-gradient iterations (10 – 20).
    cg_residual_tol       stop CG early once the squared residual ‖b − Ax‖² is below this.
    backtrack_ratio       step shrink factor per line-search try, in (0, 1) (0.5 – 0.8).
    backtrack_iterations  line-search tries before the update is rejected (10 – 15).
    value_lr              Adam step size of the value regression (1e-4 – 1e-2).
    value_iterations      Adam steps on the value loss per batch (5 – 100). 0: the value function is
                          never fitted (the failure mode of Spinning Up's exercise 2.1).
    value_minibatch_size  transitions per value step; None fits on the whole batch every step.
    normalize_advantages  standardise Â over the whole batch. Rescaling Â alone would not move the
                          step (its length is set by KL_max), but subtracting the mean acts as a constant
                          baseline and changes the direction g, so TRPO's steps differ with and
                          without it (see :func:`minippo.rollout.normalize_advantages`).
    """

    max_kl: float = 0.01
    damping: float = 0.1
    cg_iterations: int = 10
    cg_residual_tol: float = 1e-10
    backtrack_ratio: float = 0.5
    backtrack_iterations: int = 10
    value_lr: float = 1e-3
    value_iterations: int = 80
    value_minibatch_size: int | None = None
    normalize_advantages: bool = True

    def __post_init__(self):
        check_range("max_kl", self.max_kl, 0, low_inclusive=False)
        check_range("damping", self.damping, 0)
        check_range("cg_iterations", self.cg_iterations, 1, integer=True)
        check_range("cg_residual_tol", self.cg_residual_tol, 0)
        check_range("backtrack_ratio", self.backtrack_ratio, 0, 1, low_inclusive=False,
                    high_inclusive=False)
        check_range("backtrack_iterations", self.backtrack_iterations, 1, integer=True)
        check_range("value_lr", self.value_lr, 0, 1, low_inclusive=False)
        check_range("value_iterations", self.value_iterations, 0, integer=True)
        if self.value_minibatch_size is not None:
            check_range("value_minibatch_size", self.value_minibatch_size, 1, integer=True)


def surrogate_objective(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor,
                        mask: Tensor | None = None) -> Tensor:
    """``L(θ) = mean(ratio · Â)`` with ``ratio = exp(log π_θ(a|s) − log π_old(a|s))`` (TRPO eq. 14).

    At θ = θ_old its gradient is the policy gradient ``mean(∇θ log π_θ(a|s) · Â)``.

    Args:
        log_probs: log π_θ(a|s) ``[*S]``. old_log_probs: log π_old(a|s) ``[*S]``. advantages: Â ``[*S]``.
        mask: ``[*S]`` bool, the positions that are transitions (None: all); the mean is over them.

    Returns a scalar, in units of Â (to be *maximised*).
    """
    return masked_mean(torch.exp(log_probs - old_log_probs) * advantages, mask)


def flat_grad(output: Tensor, params: Sequence[Tensor], **kwargs) -> Tensor:
    """∇ of the scalar ``output`` with respect to ``params``, concatenated into one ``[P]`` vector.

    Parameters ``output`` does not depend on get a zero gradient. ``kwargs`` go to ``torch.autograd.grad``
    (``create_graph=True`` to differentiate the result again, ``retain_graph=True`` to reuse the graph).
    """
    grads = torch.autograd.grad(output, params, allow_unused=True, **kwargs)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.reshape(-1) for g in grads])


def fisher_vector_product(kl_gradient: Tensor, params: Sequence[Tensor], vector: Tensor,
                          damping: float) -> Tensor:
    """``(F + damping·I) v`` without forming F (TRPO Appendix C.1).

    F is the Hessian of the mean KL(π_old ‖ π_θ) at θ = θ_old, which equals the Fisher information
    matrix of the policy averaged over the batch's states. Since ``F v = ∇θ((∇θ KL)ᵀ v)``, one extra
    backward pass through ``kl_gradient`` gives F v.

    Args:
        kl_gradient: ``∇θ mean KL(π_old ‖ π_θ)`` as a ``[P]`` vector, computed with
            ``flat_grad(kl, params, create_graph=True)`` where π_old is a detached copy of π_θ. It is
            zero at θ_old, but its graph still holds the second derivatives.
        params: the policy parameters θ (the same list, in the same order).
        vector: v, ``[P]``.
        damping: ν ≥ 0; adds νv, which keeps CG stable where F is nearly singular.

    Returns ``[P]``. The graph of ``kl_gradient`` is kept, so this can be called once per CG iteration.
    """
    return flat_grad(kl_gradient @ vector, params, retain_graph=True) + damping * vector


def conjugate_gradient(Avp: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10,
                       residual_tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for a symmetric positive-definite A known only through products
    ``Avp(v) = A v`` (Hestenes & Stiefel 1952; the solver of TRPO Appendix C).

    Args:
        Avp: v ``[P]`` → A v ``[P]``. b: ``[P]``.
        iterations: at most this many products A p (exact after P iterations in exact arithmetic).
        residual_tol: stop early once the squared residual ``‖b − A x‖²`` falls below it.

    Returns ``(x, residual_norm)``: the solution ``[P]`` and ``‖b − A x‖`` (as tracked by the
    recurrence), a scalar tensor. Starts from x = 0.
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b − A x
    p = b.clone()  # search direction, A-conjugate to the previous ones
    r_dot_r = r @ r
    for _ in range(iterations):
        if r_dot_r <= residual_tol:  # (<=: with a tolerance of 0, an exact solution stops, not 0/0)
            break
        Ap = Avp(p)
        alpha = r_dot_r / (p @ Ap)  # exact minimiser of ½xᵀAx − bᵀx along p
        x = x + alpha * p
        r = r - alpha * Ap
        new_r_dot_r = r @ r
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x, r_dot_r.sqrt()


def line_search(params: Sequence[Tensor], full_step: Tensor,
                surrogate_and_kl: Callable[[], tuple[float, float]], max_kl: float,
                backtrack_ratio: float = 0.5, backtrack_iterations: int = 10) -> tuple[int, float, float]:
    """Backtracking line search along ``full_step`` (TRPO §6 and Appendix C).

    Tries θ_old + ratioᵏ·full_step for k = 0, 1, ..., ``backtrack_iterations − 1`` and keeps the first
    one that improves the surrogate and stays inside the trust region (mean KL ≤ ``max_kl``). The
    quadratic model used to size the step can be wrong far from θ_old; this check is what makes the
    update safe. If no try passes, ``params`` are restored to θ_old.

    Args:
        params: the policy parameters θ, updated in place.
        full_step: ``[P]``, the largest step, η·x.
        surrogate_and_kl: evaluates ``(L(θ), mean KL(π_old ‖ π_θ))`` as floats at the current ``params``.
        max_kl: KL_max. backtrack_ratio: b, the shrink factor in (0, 1).
        backtrack_iterations: number of tries.

    Returns ``(k, surrogate_improvement, kl)`` of the accepted step, or ``(-1, 0.0, 0.0)`` if every try
    was rejected and θ_old was restored. A NaN surrogate or KL is never accepted.
    """
    old_params = parameters_to_vector(params).detach()
    surrogate_old, _ = surrogate_and_kl()
    for k in range(backtrack_iterations):
        vector_to_parameters(old_params + backtrack_ratio ** k * full_step, params)
        surrogate, kl = surrogate_and_kl()
        if surrogate > surrogate_old and kl <= max_kl:
            return k, surrogate - surrogate_old, kl
    vector_to_parameters(old_params, params)
    return -1, 0.0, 0.0


class TRPO:
    """The TRPO update. The policy has no optimiser (its step comes from CG and the line search); the
    value function's Adam optimiser is the only state between iterations.

    Args:
        policy: any policy with ``evaluate(minibatch) -> (dist, values)`` (see ``minippo.policies``);
            its parameters are split with :func:`minippo.value_function.split_parameters`.
        config: :class:`TRPOConfig`.
        seed: seeds the value minibatch shuffling.
    """

    def __init__(self, policy: nn.Module, config: TRPOConfig, seed: int = 0):
        self.policy, self.config = policy, config
        self.policy_params, value_params = split_parameters(policy)
        self.value_optimizer = torch.optim.Adam(value_params, lr=config.value_lr, fused=True)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, batch, progress: float) -> dict[str, float]:
        """One TRPO iteration on ``batch`` (a :class:`minippo.rollout.Batch` with advantages and returns).

        ``progress`` (the fraction of training done) is accepted for the shared loop and unused.

        Returns:
            kl                     mean KL(π_old ‖ π_new) after the update (0 if rejected); ≤ max_kl.
            surrogate_improvement  L(θ_new) − L(θ_old), in units of the (normalised) Â; > 0 if accepted.
            line_search_steps      k of the accepted step bᵏηx: 0 = the full step was accepted;
                                   −1 = every try was rejected and the policy is unchanged.
            cg_residual            ‖g − (F + νI) x‖ left by conjugate gradient.
            step_norm              ‖θ_new − θ_old‖ (0 if rejected).
            value_loss             mean squared error of the value regression (squared reward units).
            entropy                mean entropy of π_old over the batch.
            explained_variance     of the returns by V_old.

        Raises:
            NonFiniteLossError: the surrogate or the KL is NaN/inf; the policy is left unchanged.
        """
        c = self.config
        params = self.policy_params
        data = batch.all()
        mask = data.mask  # every mean is over the transitions only (see minippo.rollout.Minibatch)
        advantages = data.advantages
        if c.normalize_advantages:
            advantages = normalize_advantages(advantages, mask)
        with torch.no_grad():
            # π_old as a detached distribution. Its log-probs are recomputed rather than read from the
            # batch so that the ratio and the KL are measured against exactly the same π_old.
            old_dist, _ = self.policy.evaluate(data)
            old_log_probs = old_dist.log_prob(data.actions)

        # g = ∇θ L(θ_old), the policy gradient.
        dist, _ = self.policy.evaluate(data)
        surrogate = surrogate_objective(dist.log_prob(data.actions), old_log_probs, advantages, mask)
        kl = masked_mean(kl_divergence(old_dist, dist), mask)
        check_finite(surrogate, "TRPO surrogate objective")
        check_finite(kl, "TRPO mean KL")
        g = flat_grad(surrogate, params, retain_graph=True)

        # x ≈ (F + νI)⁻¹ g by conjugate gradient, F v by double back-propagation through the KL.
        kl_gradient = flat_grad(kl, params, create_graph=True)
        Fvp = lambda v: fisher_vector_product(kl_gradient, params, v, c.damping)
        x, cg_residual = conjugate_gradient(Fvp, g, c.cg_iterations, c.cg_residual_tol)

        # η = sqrt(2 KL_max / xᵀ(F + νI)x): the step whose damped quadratic KL model ½(ηx)ᵀ(F + νI)(ηx) is
        # KL_max. The undamped model ½(ηx)ᵀF(ηx) = KL_max·xᵀFx / (xᵀFx + ν‖x‖²) is a little below KL_max
        # (about 0.008 – 0.009 for KL_max = 0.01 here); the line search checks the true KL in any case.
        x_F_x = (x @ Fvp(x)).item()
        step_size = math.sqrt(2 * c.max_kl / x_F_x) if x_F_x > 0 else 0.0
        full_step = (step_size * x).detach()

        @torch.no_grad()
        def surrogate_and_kl() -> tuple[float, float]:
            new_dist, _ = self.policy.evaluate(data)
            new_surrogate = surrogate_objective(new_dist.log_prob(data.actions), old_log_probs, advantages,
                                                mask)
            return new_surrogate.item(), masked_mean(kl_divergence(old_dist, new_dist), mask).item()

        old_params = parameters_to_vector(params).detach()
        steps, improvement, new_kl = line_search(params, full_step, surrogate_and_kl, c.max_kl,
                                                 c.backtrack_ratio, c.backtrack_iterations)
        step_norm = (parameters_to_vector(params).detach() - old_params).norm().item()

        value_loss = fit_value_function(self.policy, self.value_optimizer, batch, c.value_iterations,
                                        c.value_minibatch_size, self.generator)
        return {"kl": new_kl, "surrogate_improvement": improvement, "line_search_steps": steps,
                "cg_residual": cg_residual.item(), "step_norm": step_norm, "value_loss": value_loss,
                "entropy": masked_mean(old_dist.entropy(), mask).item(),
                "explained_variance": explained_variance(data.values, data.returns, mask)}

    def state_dict(self) -> dict:
        return {"value_optimizer": self.value_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.value_optimizer.load_state_dict(state["value_optimizer"])
