"""The errors minippo raises on bad input. The command line prints them without a traceback."""

import numbers

import torch


class MinippoError(Exception):
    """Bad input: the message names the problem and how to fix it (unknown env id, unsupported space,
    out-of-range hyperparameter, corrupt or mismatched checkpoint, ...)."""


class NonFiniteLossError(MinippoError):
    """A loss became NaN or infinite. Training stops before the bad gradient step is applied, and the
    last checkpoint written (from the previous iteration) is kept."""


class EnvStepError(MinippoError):
    """A Gymnasium env's ``step`` raised, or returned a NaN or infinite observation or reward. Training
    stops before that rollout reaches an update, and the checkpoint of the last completed iteration is
    kept. The message names the env, the rollout step and (from the training loop) the iteration.

    Like every :class:`MinippoError`, the command line reports it in one line with exit status 2: the env
    is the user's input (its id names the code that failed), and nothing is lost, so once the env is
    fixed ``minippo train --resume RUN_DIR`` goes on from the kept checkpoint."""


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True, integer: bool = False) -> None:
    """Raise :class:`MinippoError` unless ``value`` is a number with ``low <= value <= high`` (bounds
    optional, inclusivity as given); with ``integer``, an int (a count such as ``num_epochs``: a float,
    even ``10.0`` or ``1e400``, is refused rather than failing later in ``range()``).

    The message names the hyperparameter, its value and its valid range, e.g.
    ``clip_range=1.5 is out of range: it must be in (0, 1).``,
    ``learning_rate='abc' is not a number: it must be a number in (0, 1].`` or
    ``num_epochs=1.5 is not an int: it must be an int in [1, inf].``
    """
    bound = lambda x: f"{x:g}" if isinstance(x, float) else str(x)  # noqa: E731 (ints in full: 4294967295)
    left = ("[" if low_inclusive else "(") + (bound(low) if low is not None else "-inf")
    right = (bound(high) if high is not None else "inf") + ("]" if high_inclusive else ")")
    if integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise MinippoError(f"{name}={value!r} is not an int: it must be an int in {left}, {right}.")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MinippoError(f"{name}={value!r} is not a number: it must be a number in {left}, {right}.")
    ok = True
    if low is not None:
        ok &= value >= low if low_inclusive else value > low
    if high is not None:
        ok &= value <= high if high_inclusive else value < high
    if not ok:
        raise MinippoError(f"{name}={value!r} is out of range: it must be in {left}, {right}.")


def check_finite(loss: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteLossError` (before any gradient step) if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"The {what} is {loss.item()}. Training stopped before applying this update; the last "
            "checkpoint is from the previous iteration. Try a smaller learning rate, observation/reward "
            "normalisation, or check the environment's rewards for NaN.")
