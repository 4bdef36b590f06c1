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
    keys; later rows must have the same keys. NaN is written as an empty cell.

    ``append=True`` continues an existing file (a resumed run): its header is kept. A row whose write
    fails is taken back out, so the file never ends in half a row; :meth:`undo_last` takes back the last
    complete one (when the checkpoint that should follow it could not be written).
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.writer: csv.DictWriter | None = None
        header = None
        if append and self.path.is_file():
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
        self.file = open(self.path, "a" if header else "w", newline="")
        if header:
            self.writer = csv.DictWriter(self.file, fieldnames=header)
        self.row_start = self.file.tell()

    def log(self, row: dict) -> None:
        start = self.file.tell()
        try:
            if self.writer is None:
                self.writer = csv.DictWriter(self.file, fieldnames=list(row))
                self.writer.writeheader()
            clean = {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            self.writer.writerow(clean)
            self.file.flush()
        except BaseException:
            self._truncate(start)
            raise
        self.row_start = start

    def undo_last(self) -> None:
        """Remove the row written by the last :meth:`log` (and the header, if that row wrote it)."""
        self._truncate(self.row_start)

    def _truncate(self, size: int) -> None:
        try:
            self.file.truncate(size)  # drops what was buffered past ``size`` as well
            self.file.seek(size)
        except (OSError, ValueError):
            pass  # nothing better to do; a resumed run drops rows after the checkpoint anyway
        if size == 0:
            self.writer = None

    def close(self) -> None:
        self.file.close()


def keep_progress_rows(path: str | Path, last_iteration: int) -> None:
    """Rewrite ``progress.csv`` (atomically) with only its rows for iterations 1..``last_iteration``: the
    rows a resumed run keeps. Rows after the checkpoint's iteration, or half a row written at a kill, go.

    Raises:
        MinippoError: the file is missing rows 1..``last_iteration`` or is not a minippo progress.csv.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:  # keep the csv module's \r\n line ends as they are
            text = f.read()
    except OSError as e:
        raise MinippoError(f"Cannot read {path} to resume: {e.strerror or e}.") from None
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].startswith("iteration,"):
        raise MinippoError(f"{path} is not a minippo progress.csv (no 'iteration' header); cannot resume.")
    width = len(next(csv.reader([lines[0]])))
    kept = [lines[0]]
    for line in lines[1:1 + last_iteration]:
        cells = next(csv.reader([line]), [])
        if not line.endswith("\n") or len(cells) != width or cells[0] != str(len(kept)):
            break
        kept.append(line)
    if len(kept) - 1 != last_iteration:
        raise MinippoError(f"{path} has rows for iterations 1..{len(kept) - 1} but the checkpoint is at "
                           f"iteration {last_iteration}; it is not this run's progress.csv. Cannot resume.")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write("".join(kept))
    os.replace(tmp, path)


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
