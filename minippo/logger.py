"""What a run leaves on disk: ``config.json``, ``progress.csv`` (a row per iteration, flushed as it goes)
and ``checkpoint.pt`` (written atomically), so a crash or Ctrl-C loses at most the iteration in flight.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
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
            elif extra := [key for key in row if key not in self.writer.fieldnames]:
                raise MinippoError(f"{self.path} has no columns {extra} for this run's statistics (its "
                                   "header is another run's); it is not this run's progress.csv.")
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


TENSORBOARD_FIX = 'pip install "minippo[tensorboard]"'


def tensorboard_writer(log_dir: str | Path, purge_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing event files to ``log_dir`` (view them with
    ``tensorboard --logdir RUN_DIR``).

    ``purge_step``: for a resumed run, the first global step it will log. TensorBoard then drops the
    events at or after it that an earlier process wrote past its last checkpoint, so no step appears twice.

    Raises:
        MinippoError: the ``tensorboard`` package is not installed (the message gives the pip command).
    """
    return require_tensorboard()(str(log_dir), purge_step=purge_step)


def require_tensorboard() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or :class:`MinippoError` with the fix if the
    ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is missing or too old
        raise MinippoError(f"--tensorboard needs the tensorboard package, which is not installed: "
                           f"{TENSORBOARD_FIX}.") from None
    return SummaryWriter


def log_scalars(writer, row: dict) -> None:
    """Write the numbers of one ``progress.csv`` row to ``writer`` as scalars at ``row["global_step"]``,
    each tagged with its column's name, and flush them to disk (as the CSV row is). NaN, an empty cell
    in the CSV, is left out; so are values that are not numbers."""
    step = int(row["global_step"])
    for key, value in row.items():
        if isinstance(value, numbers.Real) and not math.isnan(value):
            writer.add_scalar(key, float(value), step)
    writer.flush()


def progress_rows(path: str | Path, last_iteration: int) -> list[str]:
    """The lines of ``progress.csv`` that a run resumed after ``last_iteration`` keeps: the header and the
    rows of iterations 1..``last_iteration``, as written (with the csv module's CRLF line ends).
    Rows after them, or half a row written at a kill, are left out.

    Raises:
        MinippoError: the file is missing, unreadable, not UTF-8, not a minippo progress.csv (its header
            does not start with ``iteration,global_step``), or lacks complete rows 1..``last_iteration``.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:  # newline="": keep the \r\n line ends as they are
            text = f.read()
    except UnicodeDecodeError:
        raise MinippoError(f"{path} is corrupt: it is not UTF-8 text, so not a minippo progress.csv."
                           ) from None
    except OSError as e:
        raise MinippoError(f"Cannot read {path}: {e.strerror or e}.") from None
    lines = text.splitlines(keepends=True)
    # Read the lines as a CSV reader reads the whole file (a quote opened in one row would swallow the
    # next), and keep the rows that are each one complete line of the header's width, numbered 1, 2, ...
    reader = csv.reader(lines)
    try:
        header = next(reader) if lines and lines[0].startswith("iteration,global_step,") else None
    except csv.Error:  # e.g. a field longer than the csv module's limit: not a header minippo wrote
        header = None
    if header is None or reader.line_num != 1:
        raise MinippoError(f"{path} is not a minippo progress.csv: its first line is not a header starting "
                           "with 'iteration,global_step'.")
    kept = [lines[0]]
    try:
        for cells in reader:
            line = lines[reader.line_num - 1]
            if (len(kept) > last_iteration or reader.line_num != len(kept) + 1 or not line.endswith("\n")
                    or len(cells) != len(header) or cells[0] != str(len(kept))):
                break
            kept.append(line)
    except csv.Error:  # not a row minippo wrote
        pass
    if len(kept) - 1 != last_iteration:
        raise MinippoError(f"{path} has complete rows for iterations 1..{len(kept) - 1} only, but the "
                           f"checkpoint is at iteration {last_iteration}; it is not this run's progress.csv.")
    return kept


def keep_progress_rows(path: str | Path, last_iteration: int) -> None:
    """Rewrite ``progress.csv`` (atomically) with only its rows for iterations 1..``last_iteration``: the
    rows a resumed run keeps (:func:`progress_rows`). Rows after the checkpoint's iteration, or half a row
    written at a kill, go.

    Raises:
        MinippoError: as :func:`progress_rows`; the file is then left as it is.
    """
    path = Path(path)
    kept = progress_rows(path, last_iteration)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write("".join(kept))
    os.replace(tmp, path)


def read_json(path: str | Path):
    """The JSON value in the file ``path``, or None if there is no such file.

    Raises:
        MinippoError: the file is unreadable, not UTF-8, or not valid JSON; the message names the file.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise MinippoError(f"{path} is corrupt: it is not UTF-8 text, so not JSON.") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an int of 5000 digits, [[[[...
        raise MinippoError(f"{path} is corrupt: it is not valid JSON ({e}).") from None
    except OSError as e:
        raise MinippoError(f"Cannot read {path}: {e.strerror or e}.") from None


def read_run_config(path: str | Path) -> dict:
    """Read the ``config.json`` of a Gymnasium run and check its shape: a JSON object whose ``train``
    section names ``env_id`` and ``algo`` (strings), ``seed`` and ``total_steps`` (ints).

    Raises:
        MinippoError: the file is missing, unreadable, not UTF-8, not JSON, or JSON of another shape; the
            message names the file and what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise MinippoError(f"{path} does not exist; is {path.parent} a run folder?")
    config = read_json(path)
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict):
        raise MinippoError(f"{path} is not the config.json of a Gymnasium run: it has no 'train' section "
                           "(an RLHF run, or another program's file?).")
    for key, kind in (("env_id", str), ("algo", str), ("seed", int), ("total_steps", int)):
        value = train.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MinippoError(f"{path} is not the config.json of a Gymnasium run: train.{key} is {value!r}, "
                               f"not {'a string' if kind is str else 'an int'}.")
    return config


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
        # torch.load does not check the CRC-32 that the zip format keeps for every record, so a flipped
        # bit in the weights would load silently as a different policy; zipfile's testzip checks them all.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        if damaged is not None:
            raise MinippoError(f"{path} is corrupt: its record {damaged!r} fails its CRC check (the file was "
                               "changed after it was written). Use another checkpoint or retrain.")
        state = torch.load(path, map_location=map_location, weights_only=True)
    except MinippoError:
        raise
    except Exception as e:  # a truncated or foreign file: BadZipFile, RuntimeError, UnpicklingError, ...
        raise MinippoError(f"{path} is corrupt or not a minippo checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}). Use another checkpoint or "
                           "retrain.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise MinippoError(f"{path} is not a minippo checkpoint (expected format {CHECKPOINT_FORMAT!r}).")
    return state
