"""Read the VPG, PPO and TRPO learning curves off Spinning Up's benchmark plots (matplotlib SVGs) into
``spinningup_curves.csv``, for ``benchmarks/mujoco_vs_published.py``.

    git clone https://github.com/openai/spinningup
    python benchmarks/published/extract_spinningup.py spinningup/docs/images/plots

Spinning Up publishes its benchmarks as plots only (docs/spinningup/bench.rst: 10 seeds, mean line and a
± 1 std band over seeds, the average return of the episodes in each 4000-step batch, smoothed over 11
epochs). An SVG keeps the drawn coordinates, so the curves can be read back exactly rather than by eye:
the axes' transform is fitted to the tick positions and labels (a straight line through them; the script
stops if a tick is off it by more than 0.01 of a unit), each curve is found by the colour of its legend
entry, and the band's two edges at a step are where the band's outline crosses that step. The band keeps
one point per 4000-step epoch (1M steps is epoch 250); the mean is its middle. VPG and PPO
come from the PyTorch plots; TRPO from the TensorFlow ones (Spinning Up has no PyTorch TRPO). Rows are
kept up to 1.1M env steps. The ``env`` column names the minippo env each curve is set beside; Spinning Up
ran the -v3 envs.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np

PLOTS = {("Hopper-v5", "pyt/pytorch_hopper"): ("vpg", "ppo"),
         ("HalfCheetah-v5", "pyt/pytorch_halfcheetah"): ("vpg", "ppo"),
         ("Hopper-v5", "tf1/tensorflow_hopper"): ("trpo",),
         ("HalfCheetah-v5", "tf1/tensorflow_halfcheetah"): ("trpo",)}
MAX_STEP = 1.1e6


def points(d: str) -> np.ndarray:
    """``[K, 2]`` SVG coordinates of a path made of M and L commands."""
    return np.array([[float(x), float(y)] for x, y in re.findall(r"[ML]\s*([-\d.e]+)\s+([-\d.e]+)", d)])


def axis_transform(svg: str, axis: str, scale: float) -> tuple[float, float]:
    """``(a, b)`` with value = a · coordinate + b, fitted to the axis' ticks (gridline and label)."""
    ticks = []
    for block in re.findall(rf'<g id="{axis}tick_\d+">(.*?)</g>\s*</g>', svg, re.S):
        x, y = map(float, re.search(r'd="M ([-\d.]+) ([-\d.]+)', block).groups())
        ticks.append((x if axis == "x" else y, float(re.search(r"<!-- (.*?) -->", block).group(1)) * scale))
    pixels, values = np.array(ticks).T
    a, b = np.polyfit(pixels, values, 1)
    if np.max(np.abs(a * pixels + b - values)) > 0.01 * max(1.0, scale):
        raise SystemExit(f"the {axis} ticks are not on a straight line: not a linear axis")
    return a, b


def curves(svg: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """algorithm -> (mean line ``[K, 2]``, band outline ``[J, 2]``), in data coordinates."""
    xa, xb = axis_transform(svg, "x", float(re.search(r"<!-- (1e\d) -->", svg).group(1)))
    ya, yb = axis_transform(svg, "y", 1.0)
    to_data = lambda p: np.column_stack([p[:, 0] * xa + xb, p[:, 1] * ya + yb])  # noqa: E731
    lines, bands = {}, {}
    path = r'<path clip-path="[^"]*" d="([^"]*)" style="fill'
    for d, color in re.findall(path + r':none;stroke:(#[0-9a-f]{6});', svg):
        if color != "#ffffff" and len(points(d)) > 10:  # white: the gridlines
            lines.setdefault(color, to_data(points(d)))
    for d, color in re.findall(path + r':(#[0-9a-f]{6});fill-opacity', svg):
        bands[color] = to_data(points(d))
    legend = svg[svg.index('id="legend_1"'):]
    names = re.findall(r'stroke:(#[0-9a-f]{6});[^"]*"/>\s*</g>\s*<g id="line2d_\d+"/>\s*<g id="text_\d+">\s*'
                       r'<!-- (\w+) -->', legend)
    return {name: (lines[color], bands[color]) for color, name in names}


def band_edges(outline: np.ndarray, step: float) -> tuple[float, float]:
    """The lowest and highest point where the band's outline crosses ``step``."""
    ys = [y0 + (step - x0) / (x1 - x0) * (y1 - y0)
          for (x0, y0), (x1, y1) in zip(outline[:-1], outline[1:], strict=True)
          if x0 != x1 and (x0 - step) * (x1 - step) <= 0]
    return min(ys), max(ys)


def main(plots_dir: str) -> int:
    out = Path(__file__).with_name("spinningup_curves.csv")
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env", "algo", "implementation", "step", "mean", "low", "high"])
        for (env_id, name), algos in PLOTS.items():
            found = curves((Path(plots_dir) / f"{name}_performance.svg").read_text())
            for algo in algos:
                line, band = found[algo]
                # Matplotlib thinned the mean line when it saved the SVG (159 to 600 of the 750 epochs are
                # left), but kept every epoch of the band: read the band, and take its middle as the mean.
                steps = np.unique(band[:, 0])
                for step in steps[steps <= MAX_STEP]:
                    low, high = band_edges(band, step)
                    writer.writerow([env_id, algo, name.split("/")[0], f"{step:.0f}",
                                     f"{(low + high) / 2:.1f}", f"{low:.1f}", f"{high:.1f}"])
                low, high = band_edges(band, 1e6)
                print(f"{env_id} {algo}: at 1M steps {(low + high) / 2:.0f} (the thinned line: "
                      f"{np.interp(1e6, line[:, 0], line[:, 1]):.0f}), band [{low:.0f}, {high:.0f}]")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "spinningup/docs/images/plots"))
