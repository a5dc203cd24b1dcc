"""What a calibration run needs from its surroundings, whoever calls it (CLI, ComfyUI, A1111, a thread).

* ``training_mode()``: leave the caller's inference mode and enable gradients for the run, and restore the
  caller's grad and inference mode exactly afterwards (ComfyUI runs every node inside
  ``torch.inference_mode()``; A1111 generates under ``torch.no_grad()``).
* ``trainable(t)``: a tensor made under inference mode cannot take part in autograd; clone it.
* ``Cancelled`` and ``check_cancel``: the host's interrupt, polled between batches.
* ``write_atomically``: a file appears complete or not at all (temporary name that no weights listing
  matches, then ``os.replace``), so a cancel or a crash never leaves a half-written file.
* ``prune_cache``: the corpus cache stays under a size bound; the oldest files go first.
* ``Budget``: splits a time budget into the run's phases and sizes the corpus to fit it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)
# The hosts' default time budget: the whole run (encoding, training, detector, saving) stays within it.
DEFAULT_TIME_BUDGET_S = 540
CACHE_MAX_BYTES = 512 * 1024 * 1024  # corpus cache bound (evict oldest beyond it)
CACHE_PATTERN = "corpus-*.safetensors"
TEMP_SUFFIX = ".partial"
# Shares of a time budget: encoding the corpus, the detector's extra prompts, and a reserve for the final
# validation, the detector fit and saving; training gets whatever is left (at least 35%).
ENCODE_SHARE = 0.40
DETECTOR_SHARE = 0.08
RESERVE_SHARE = 0.07
MIN_UNSAFE_PROMPTS = 60
MIN_BENIGN_PROMPTS = 40


class Cancelled(RuntimeError):
    """The host asked to stop (its interrupt button); nothing was written."""


StopCheck = Callable[[], bool]


def check_cancel(should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("calibration cancelled; no weights file was written")


@contextlib.contextmanager
def training_mode():
    """Gradients on and inference mode off inside; the caller's modes exactly as they were afterwards.

    ``torch.inference_mode(False)`` and ``torch.enable_grad()`` are both context managers that restore the
    previous (thread-local) state on exit, also when the body raises.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def trainable(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself, or a normal copy of it if it was created under inference mode."""
    if tensor.is_inference():
        with torch.inference_mode(False):
            return tensor.clone()
    return tensor


def temp_path_for(path: Path) -> Path:
    """Hidden name in the same folder that no ``*.safetensors`` listing matches."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temp)`` then rename the temporary file to ``path``; on any error remove the temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return path


def prune_cache(folder: str | Path | None, max_bytes: int = CACHE_MAX_BYTES, keep: Path | None = None) -> list[Path]:
    """Delete the oldest corpus cache files (by modification time) until the folder holds at most ``max_bytes``.

    ``keep`` (the file just written or read) is never deleted. Returns the deleted files.
    """
    if folder is None or not Path(folder).is_dir():
        return []
    files = []
    for path in Path(folder).glob(CACHE_PATTERN):
        try:
            stat = path.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = []
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= max_bytes:
            break
        if keep is not None and path.resolve() == Path(keep).resolve():
            continue
        try:
            path.unlink()
        except OSError as exc:
            log.warning("could not evict corpus cache file %s: %s", path.name, exc)
            continue
        total -= size
        removed.append(path)
    if removed:
        log.info("corpus cache: evicted %d old file(s) to stay under %d MB", len(removed), max_bytes // 2 ** 20)
    return removed


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    return f"{minutes} min {sec:02d} s"


class Budget:
    """A time budget for one run (``None``: unbounded), measured from its creation."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = None if seconds is None else max(1.0, float(seconds))
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def spent(self) -> bool:
        return self.left() <= 0

    def training_deadline_left(self) -> float:
        """Seconds training may still use: the budget minus the reserve for the detector and saving."""
        if self.seconds is None:
            return float("inf")
        return self.left() - (DETECTOR_SHARE + RESERVE_SHARE) * self.seconds

    def corpus_scale(self, seconds_per_prompt: float, prompts: int) -> float:
        """Factor (<= 1) by which to shrink a corpus of ``prompts`` so its encoding fits its share."""
        if self.seconds is None or seconds_per_prompt <= 0 or prompts <= 0:
            return 1.0
        allowed = ENCODE_SHARE * self.seconds - self.elapsed()
        return max(0.0, min(1.0, allowed / (seconds_per_prompt * prompts)))


def scaled_sizes(n_unsafe: int, n_benign: int, scale: float) -> tuple[int, int]:
    if scale >= 1.0:
        return n_unsafe, n_benign
    return (max(MIN_UNSAFE_PROMPTS, int(n_unsafe * scale)), max(MIN_BENIGN_PROMPTS, int(n_benign * scale)))


# Share of the whole run each phase takes (for one progress bar): its start and its width.
PHASES = (("timing", 0.0, 0.02), ("generating", 0.0, 0.02), ("corpus", 0.02, 0.0), ("encod", 0.02, 0.38),
          ("training", 0.40, 0.50), ("epoch", 0.40, 0.50), ("fitting", 0.90, 0.0), ("saved", 1.0, 0.0))


def overall_fraction(done: float, total: float, message: str, previous: float = 0.0) -> float:
    """Map one ``progress(done, total, message)`` call of ``calibrate`` onto 0..1 for a single bar.

    Encoding takes 2-40%, training 40-90%, the detector's prompts 90-99% (the detector's encoding messages
    come after training, so the bar never goes back: the result is at least ``previous``).
    """
    within = max(0.0, min(1.0, done / total)) if total else 1.0
    if message.startswith("encoding detector"):
        start, width = 0.90, 0.09
    else:
        start, width = next(((s, w) for prefix, s, w in PHASES if message.startswith(prefix)), (previous, 0.0))
    return max(previous, min(1.0, start + width * within))
