"""The grader, ``minippo check``: minippo's own functions pass every exercise, known-buggy versions fail
(exit 1), submissions that cannot be graded exit 2 with one line, a hang is stopped, and a folder gets a
table."""

import textwrap
import time

import pytest

from minippo.check import EXERCISES, grade
from minippo.cli import main

# --- Submissions, as the source of a student's file -------------------------------------------------------

CORRECT = {
    "gae": """
        import torch

        def compute_gae(rewards, values, next_values, dones, gamma, gae_lambda):
            advantages = torch.zeros_like(rewards)
            running = torch.zeros_like(rewards[0])
            for t in reversed(range(rewards.shape[0])):
                delta = rewards[t] + gamma * next_values[t] - values[t]
                running = delta + gamma * gae_lambda * (1 - dones[t]) * running
                advantages[t] = running
            return advantages, advantages + values
        """,
    "reward_to_go": """
        import torch

        def reward_to_go(rewards, dones, gamma):
            returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
            for t in reversed(range(len(rewards))):
                running = rewards[t] + gamma * (1 - dones[t]) * running
                returns[t] = running
            return returns
        """,
    "clipped_surrogate": """
        import torch

        def clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_range):
            ratio = torch.exp(log_probs - old_log_probs)
            clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
            return -torch.min(ratio * advantages, clipped * advantages).mean()
        """,
    "conjugate_gradient": """
        import torch

        def conjugate_gradient(Avp, b, iterations):
            x, r, p = torch.zeros_like(b), b.clone(), b.clone()
            rr = r @ r
            for _ in range(iterations):
                if rr < 1e-20:
                    break
                Ap = Avp(p)
                alpha = rr / (p @ Ap)
                x = x + alpha * p
                r = r - alpha * Ap
                rr, rr_old = r @ r, rr
                p = r + (rr / rr_old) * p
            return x
        """,
    "bradley_terry": """
        import torch.nn.functional as F

        def bradley_terry_loss(chosen_scores, rejected_scores):
            return -F.logsigmoid(chosen_scores - rejected_scores).mean()
        """,
    "kl_penalised_rewards": """
        import torch

        def kl_penalised_rewards(log_probs, ref_log_probs, scores, ends, beta):
            T, N = log_probs.shape
            rewards = torch.zeros_like(log_probs)
            for n in range(N):
                end = int(ends[n])
                rewards[:end + 1, n] = -beta * (log_probs[:end + 1, n] - ref_log_probs[:end + 1, n])
                rewards[end, n] += scores[n]
            return rewards
        """,
}

# Each bug is a (search, replace) edit of the correct version above: what students really get wrong.
BUGS = {
    "gae": {
        "ignores dones": ("gae_lambda * (1 - dones[t]) * running", "gae_lambda * running"),
        "bootstraps after a termination from the next episode's first state": (
            "delta = rewards[t] + gamma * next_values[t] - values[t]",
            "v_next = next_values[t] if t == len(rewards) - 1 else values[t + 1]\n"
            "                delta = rewards[t] + gamma * v_next - values[t]"),
        "without λ": ("gamma * gae_lambda * (1 - dones[t])", "gamma * (1 - dones[t])"),
        "truncation treated as termination": ("gamma * next_values[t] - values[t]",
                                              "gamma * next_values[t] * (1 - dones[t]) - values[t]"),
        "returns without the values": ("return advantages, advantages + values",
                                       "return advantages, advantages"),
        "changes rewards in place": ("delta = rewards[t] + gamma * next_values[t] - values[t]",
                                     "rewards[t] += gamma * next_values[t] - values[t]\n"
                                     "                delta = rewards[t]"),
    },
    "reward_to_go": {
        "not cut at dones": ("gamma * (1 - dones[t]) * running", "gamma * running"),
        "drops the reward of the done step": ("running = rewards[t] + gamma * (1 - dones[t]) * running",
                                              "running = (1 - dones[t]) * (rewards[t] + gamma * running)"),
        "undiscounted": ("rewards[t] + gamma * (1", "rewards[t] + (1"),
        "a forward cumulative sum": ("reversed(range(len(rewards)))", "range(len(rewards))"),
    },
    "clipped_surrogate": {
        "max instead of min": ("torch.min(", "torch.max("),
        "the clipped term alone": ("torch.min(ratio * advantages, clipped * advantages)",
                                   "(clipped * advantages)"),
        "L^CLIP instead of −L^CLIP": ("return -torch.min", "return torch.min"),
        "a sum instead of a mean": (").mean()", ").sum()"),
        "the log-ratio instead of the ratio": ("torch.exp(log_probs - old_log_probs)",
                                               "log_probs - old_log_probs"),
        "the advantage clipped instead of the ratio": (
            "clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)\n"
            "            return -torch.min(ratio * advantages, clipped * advantages).mean()",
            "return -torch.min(ratio * advantages,\n"
            "                               ratio * advantages.clamp(-clip_range, clip_range)).mean()"),
        "detached": ("torch.exp(log_probs - old_log_probs)", "torch.exp(log_probs - old_log_probs).detach()"),
    },
    "conjugate_gradient": {
        "without the residual update": ("r = r - alpha * Ap", "pass"),
        "steepest descent (p ← r)": ("p = r + (rr / rr_old) * p", "p = r"),
        "β inverted": ("(rr / rr_old)", "(rr_old / rr)"),
        "no stop when the residual is 0 (0/0 for b = 0)": ("if rr < 1e-20:\n                    break",
                                                         "pass"),
        "one Avp call too many": ("alpha = rr / (p @ Ap)", "alpha = rr / (p @ Avp(p))"),
    },
    "bradley_terry": {
        "the sign flipped": ("chosen_scores - rejected_scores", "rejected_scores - chosen_scores"),
        "the log-likelihood instead of its negative": ("return -F.logsigmoid", "return F.logsigmoid"),
        "a sum instead of a mean": (").mean()", ").sum()"),
        "log(sigmoid(d)), which underflows": (
            "-F.logsigmoid(chosen_scores - rejected_scores)",
            "-(chosen_scores - rejected_scores).sigmoid().log()"),
    },
    "kl_penalised_rewards": {
        "the KL penalty added instead of subtracted": ("= -beta *", "= beta *"),
        "the score on the last row instead of at ends": ("rewards[end, n] += scores[n]",
                                                         "rewards[T - 1, n] += scores[n]"),
        "the penalty after the end too": ("rewards[:end + 1, n] = -beta * (log_probs[:end + 1, n] - "
                                          "ref_log_probs[:end + 1, n])",
                                          "rewards[:, n] = -beta * (log_probs[:, n] - ref_log_probs[:, n])"),
        "the score replaces the penalty at the end": ("rewards[end, n] += scores[n]",
                                                      "rewards[end, n] = scores[n]"),
    },
}


def _source(exercise: str, bug: str | None = None) -> str:
    source = CORRECT[exercise]
    if bug is not None:
        search, replace = BUGS[exercise][bug]
        assert source.count(search) == 1, (exercise, bug)
        source = source.replace(search, replace)
    return textwrap.dedent(source)


def _write(tmp_path, name: str, source: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def _check(capsys, *args) -> tuple[int, str, str]:
    code = main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# --- Correct solutions pass -------------------------------------------------------------------------------

@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_the_library_solution_passes_every_case(exercise, capsys):
    code, out, _ = _check(capsys, exercise, "--solution")
    assert code == 0, out
    total = len(EXERCISES[exercise].cases())
    assert total >= 8 and out.count("  PASS ") == total and "FAIL" not in out
    assert f"{total}/{total} cases passed" in out


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_an_independent_correct_submission_passes(exercise, tmp_path, capsys):
    code, out, _ = _check(capsys, exercise, _write(tmp_path, f"my_{exercise}.py", _source(exercise)))
    assert code == 0, out


def test_every_exercise_has_at_least_three_known_bugs():
    assert set(BUGS) == set(EXERCISES)
    assert all(len(bugs) >= 3 for bugs in BUGS.values())


# --- Known bugs fail, with a hint ------------------------------------------------------------------------

@pytest.mark.parametrize("exercise,bug", [(e, b) for e, bugs in BUGS.items() for b in bugs])
def test_a_known_bug_fails_with_exit_1_and_a_hint(exercise, bug, tmp_path, capsys):
    code, out, err = _check(capsys, exercise, _write(tmp_path, "student.py", _source(exercise, bug)))
    assert code == 1, out + err
    assert "FAIL" in out and "hint:" in out
    assert err == ""


def test_the_hint_names_the_mistake(tmp_path, capsys):
    _, out, _ = _check(capsys, "gae", _write(tmp_path, "s.py", _source("gae", "ignores dones")))
    assert "FAIL   6. every step ends an episode" in out and "(1 − done_t)" in out
    _, out, _ = _check(capsys, "clipped_surrogate",
                       _write(tmp_path, "s.py", _source("clipped_surrogate", "L^CLIP instead of −L^CLIP")))
    assert "the sign is flipped" in out
    underflows = _source("bradley_terry", "log(sigmoid(d)), which underflows")
    _, out, _ = _check(capsys, "bradley_terry", _write(tmp_path, "s.py", underflows))
    assert out.count("FAIL") == 1 and "logsigmoid" in out  # only the numerically hard case fails


# --- Submissions that cannot be graded: exit 2, one line ----------------------------------------------------

@pytest.mark.parametrize("source,message", [
    (None, "no such file"),
    ("def compute_gea(rewards, values, next_values, dones, gamma, gae_lambda):\n    pass\n",
     "defines no function compute_gae (it defines compute_gea)"),
    ("def compute_gae(rewards, values:\n    pass\n", "syntax error on line 1"),
    ("import torch\n\ndef compute_gae(rewards, values, next_values, dones, gamma, gae_lambda):\n"
     "    raise NotImplementedError('your code here')\n",
     "compute_gae raised NotImplementedError: your code here (line 4: raise NotImplementedError"),
    ("def compute_gae(rewards, values, dones, gamma, gae_lambda):\n    pass\n",
     "does not take the exercise's 6 parameters"),
    ("def compute_gae(rewards, values, next_values, dones, gamma, gae_lambda):\n    return rewards\n",
     "compute_gae must return (advantages, returns), two tensors; it returned a Tensor"),
    ("import sys\nsys.exit(3)\n", "the file raised SystemExit on line 2 while loading"),
])
def test_a_submission_that_cannot_be_graded_exits_2_with_one_line(source, message, tmp_path, capsys):
    path = tmp_path / "student.py"
    if source is not None:
        path.write_text(source)
    code, out, err = _check(capsys, "gae", path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("minippo: error: ") and message in err, err
    assert out == ""


def test_an_exception_after_some_cases_shows_them_and_names_the_case(tmp_path, capsys):
    source = _source("conjugate_gradient").replace("x = x + alpha * p",
                                                   "x = x + alpha * p\n        assert len(b) > 1, 'P = 1'")
    code, out, err = _check(capsys, "conjugate_gradient", _write(tmp_path, "s.py", source))
    assert code == 2
    assert "PASS   2. A = I" in out and "P = 1" not in out
    assert "s.py: conjugate_gradient raised AssertionError: P = 1" in err
    assert "(in case 3: P = 1: x = b / a)" in err


def test_a_hanging_function_is_stopped_at_the_time_limit(tmp_path, capsys):
    path = _write(tmp_path, "slow.py", """
        def reward_to_go(rewards, dones, gamma):
            while True:
                pass
        """)
    start = time.monotonic()
    code, out, err = _check(capsys, "reward_to_go", path, "--timeout", "1")
    assert time.monotonic() - start < 15  # 1 s once the child has started, plus its start
    assert code == 2
    assert "slow.py: did not finish within 1 s (in case 1: by hand" in err and "endless loop" in err


def test_arguments_that_do_not_fit_exit_2(tmp_path, capsys):
    assert _check(capsys, "gae")[0] == 2                          # neither FILE nor --solution
    assert _check(capsys, "gae", tmp_path, "--solution")[0] == 2  # both
    assert _check(capsys, "gae", tmp_path)[0] == 2                # a folder without .py files
    with pytest.raises(SystemExit) as e:                          # argparse: unknown exercise
        main(["check", "gea", "--solution"])
    assert e.value.code == 2


# --- A class: a folder of submissions -------------------------------------------------------------------

def test_a_folder_gets_a_table_and_exit_1_unless_all_pass(tmp_path, capsys):
    _write(tmp_path, "alice.py", _source("gae"))
    _write(tmp_path, "bob.py", _source("gae", "ignores dones"))
    _write(tmp_path, "carol.py", "def compute_gae(:\n")
    code, out, _ = _check(capsys, "gae", tmp_path)
    assert code == 1
    total = len(EXERCISES["gae"].cases())
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith(".py") or ".py " in line}
    assert rows["alice.py"].split()[1:] == [f"{total}/{total}", "pass"]
    assert "FAIL: case 6" in rows["bob.py"]
    assert f"0/{total}" in rows["carol.py"] and "error: syntax error on line 1" in rows["carol.py"]
    assert "1 of 3 submissions pass every case" in out

    (tmp_path / "bob.py").unlink()
    (tmp_path / "carol.py").unlink()
    assert _check(capsys, "gae", tmp_path)[0] == 0


def test_grade_returns_a_report_for_notebooks(tmp_path, capsys):
    report = grade("bradley_terry", _write(tmp_path, "mine.py", _source("bradley_terry", "the sign flipped")))
    assert not report.ok and 0 < report.passed < report.total
    assert "FAIL" in capsys.readouterr().out
    report = grade("bradley_terry", tmp_path / "missing.py", verbose=False)
    assert report.error == "no such file" and not report.ok
