"""What a run leaves on disk: ``config.json``, ``progress.csv`` (a row per iteration, flushed as it goes)
and ``checkpoint.pt`` (written atomically), so a crash or Ctrl-C loses at most the iteration in flight.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from pathlib import Path

import torch

from .errors import MinippoError

CHECKPOINT_FORMAT = "minippo-checkpoint-v1"


class CSVLogger:
    """Appends one row per iteration to ``path`` and flushes it at once. The header is the first row's
    keys; later rows must have the same keys. NaN is written as an empty cell."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open(self.path, "w", newline="")
        self.writer: csv.DictWriter | None = None

    def log(self, row: dict) -> None:
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            self.writer.writeheader()
        clean = {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        self.writer.writerow(clean)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``: a reader (or a crash) sees either
    the old checkpoint or the new one, never half of one. ``state`` must hold only tensors and plain
    Python values, so that it loads with ``weights_only=True``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk mid-write: leave the previous checkpoint, no debris
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Raises:
        MinippoError: the file is missing, is not a checkpoint, or is corrupt (truncated, edited).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise MinippoError(f"No checkpoint at {path}. Pass the checkpoint.pt of a run folder "
                           "(or the folder itself).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, Exception) as e:
        raise MinippoError(f"{path} is corrupt or not a minippo checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}). Use another checkpoint or "
                           "retrain.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise MinippoError(f"{path} is not a minippo checkpoint (expected format {CHECKPOINT_FORMAT!r}).")
    return state
