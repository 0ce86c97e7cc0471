"""What the user sees while the OpenRLHF pipeline runs: a progress bar, warnings and errors; the rest
goes to ``<output_dir>/pipeline.log``.

OpenRLHF's train() fills the terminal with INFO lines of Ray, vLLM, DeepSpeed and OpenRLHF (the
driver's own and every Ray worker's, which Ray forwards to the driver's stdout/stderr) and with the
workers' own tqdm bars. :class:`PipelineConsole` puts a pipe under the driver's file descriptors 1
and 2 for the run, so everything the process and its children write, Python or C, is read by one
thread that appends every line to the log file and passes on to the terminal only what a user must
see (:func:`for_terminal`): warning and error lines and the tracebacks and messages that follow
them. A second thread follows ``metrics.jsonl`` (written by the trainer actor) and draws the same
tqdm bar as the local backend (step, reward, p, eps_high) on the real terminal.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from ..local.metrics import PIPELINE_LOG

# A log level near the start of a line: vLLM "INFO 12-05 10:00:00 [x.py:1]", Ray "2026-.. INFO
# worker.py:..", OpenRLHF/DeepSpeed "[2026-..] [INFO] [..]", "(EngineCore pid=1) WARNING ...".
_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_QUIET_LEVELS = {"DEBUG", "INFO"}
# Lines without a level that a user must see (Python warnings and tracebacks, Ray's error reports).
_ALARM = re.compile(r"Traceback \(most recent call last\)|\b\w*(Error|Exception)\b|\b\w*Warning\b:|\bKilled\b|"
                    r"\bout of memory\b")
# Ray's prefix of a forwarded worker line: "(ActorName pid=123) " or "(pid=123, ip=...) " (nested for
# vLLM's worker process: "(RolloutRayActor pid=1) (Worker pid=2) ").
_SOURCE = re.compile(r"^\s*((?:\([^)]*pid=[^)]*\)\s?)+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_VOLATILE = re.compile(r"\d+")  # numbers (times, pids, steps) do not make a message new
# Notices the stack prints on every run, expected and harmless there: log file only. On the CPU
# backend: DeepSpeed, vLLM and Ray without a GPU (no Triton, enforce_eager, performance hints of
# vLLM's CPU build), vLLM's in-place reload of the weights the CPU backend broadcasts (the rotary
# embedding and the tied output layer have none); on any machine: deprecation notices of torch,
# torchdata and vLLM called by OpenRLHF or DeepSpeed, and Ray's and vLLM's notes on the settings
# OpenRLHF chooses (zero-copy tensors, pickle serialization, accelerator environment variables).
EXPECTED_WARNINGS = re.compile(
    r"Setting accelerator to CPU|Triton is installed, but|Triton not installed|requires Triton|"
    r"Enforce eager set|Inductor compilation was disabled|Reset SSM cache type|"
    r"is not found in LD_PRELOAD|NUMA binding|"
    r"(RotaryEmbedding|ParallelLMHead|VocabParallelEmbedding): Failed to load weights|"
    r"'pin_memory' argument is set as true but no accelerator|is deprecated|will be removed in the future|"
    r"Zero-copy tensor serialization is enabled|The given NumPy array is not writable|"
    r"Allowing insecure serialization|will no longer override accelerator visible devices|"
    r"Failed to load CPU gemm_4bit_forward"
)
_RAY_REPEATS = re.compile(r"\s*\[repeated \d+x across cluster\]")


class LineRouter:
    """Decides, line by line, what reaches the terminal (:meth:`for_terminal`).

    A line with a log level is shown from WARNING up; a line without one if it looks like an error
    (a traceback, ``SomethingError``, ``SomethingWarning:``) or is an indented continuation of a
    shown line of the same source (traceback frames, the code line under a Python warning). A
    warning is shown once per run (repeats, e.g. the same deprecation notice at every step, go to
    the log only), as are the :data:`EXPECTED_WARNINGS` of the CPU stack.
    """

    def __init__(self) -> None:
        self._showing: dict[str, bool] = {}  # per source: is the current block shown
        self._seen_warnings: set[str] = set()

    def for_terminal(self, line: str) -> bool:
        line = _RAY_REPEATS.sub("", _ANSI.sub("", line))
        match = _SOURCE.match(line)
        source = match.group(1).strip() if match else "driver"
        body = line[match.end():] if match else line
        if not body.strip():
            return False
        level = _LEVEL.search(body[:80])
        if level:
            shown = level.group(1) not in _QUIET_LEVELS
            is_warning = level.group(1) in ("WARNING", "WARN")
        elif _ALARM.search(body):
            shown, is_warning = True, bool(re.search(r"\b\w*Warning\b:", body))
        else:  # an indented continuation of the block above (traceback frames, a warning's code line)
            shown = self._showing.get(source, False) and body[:1].isspace()
            self._showing[source] = shown
            return shown
        if shown and is_warning:
            key = _VOLATILE.sub("#", body[level.end():] if level else body).strip()
            shown = key not in self._seen_warnings and not EXPECTED_WARNINGS.search(body)
            self._seen_warnings.add(key)
        self._showing[source] = shown
        return shown


class PipelineConsole:
    """Context manager for a training run of the OpenRLHF backend (see the module docstring)."""

    def __init__(self, output_dir: Path, total_steps: int, initial_step: int, desc: str, progress: bool = True):
        self.output_dir = Path(output_dir)
        self.total_steps, self.initial_step, self.desc, self.progress = total_steps, initial_step, desc, progress
        self.log_path = self.output_dir / PIPELINE_LOG
        self.terminal = None  # text stream on the real stderr, for the bar and the lines shown
        self._bar = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- set-up / tear-down
    def __enter__(self) -> "PipelineConsole":
        self.output_dir.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.terminal = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
        self._log = self.log_path.open("a", buffering=1)
        self._log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(sys.argv)}\n")
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        # Drains the pipe for the rest of the process: Ray's processes started by this one inherit
        # the descriptors and may still write after the run (they must never block on a full pipe).
        self._reader = threading.Thread(target=self._route, args=(read_fd,), name="apmpo-console", daemon=True)
        self._reader.start()
        if self.progress:
            self._watcher = threading.Thread(target=self._follow_metrics, name="apmpo-progress", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._stop.set()
        if self.progress:
            self._watcher.join(timeout=5)
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        time.sleep(0.2)  # let the reader take what was written just before
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._log.flush()

    def show(self, text: str) -> None:
        """A message of this program for the terminal (and the log)."""
        sys.stdout.flush()
        with self._lock:
            self._log.write(text + "\n")
            if self._bar is not None:
                self._bar.clear()
            self.terminal.write(text + "\n")
            if self._bar is not None:
                self._bar.refresh()

    # ---------------------------------------------------------------- the two threads
    def _route(self, read_fd: int) -> None:
        router = LineRouter()
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    return
                pending += chunk
                # tqdm bars of the workers redraw with \r: each redraw is a line of its own here
                *lines, pending = re.split(rb"\r\n|\n|\r", pending)
                for raw in lines:
                    self._emit(raw.decode("utf-8", "replace"), router)

    def _emit(self, line: str, router: LineRouter) -> None:
        with self._lock:
            if not line.strip():
                return
            self._log.write(_ANSI.sub("", line) + "\n")  # Ray colours its prefixes; plain text in the file
            if router.for_terminal(line) and not self.terminal.closed:
                if self._bar is not None:
                    self._bar.clear()
                self.terminal.write(line + "\n")
                if self._bar is not None:
                    self._bar.refresh()

    def _follow_metrics(self) -> None:
        """Draw the bar from metrics.jsonl: rows present before this run (an earlier run's, or steps
        before the checkpoint it resumes from) are skipped until the trainer rewrites the file."""
        from tqdm import tqdm

        path = self.output_dir / "metrics.jsonl"
        inode, position = None, 0
        if path.exists():
            st = path.stat()
            inode, position = st.st_ino, st.st_size
        shown = self.initial_step
        with self._lock:
            self._bar = tqdm(total=self.total_steps, initial=shown, desc=self.desc, unit="step", file=self.terminal,
                             dynamic_ncols=True, mininterval=0.5)
        while not self._stop.is_set():
            try:
                st = path.stat()
                if st.st_ino != inode or st.st_size < position:
                    inode, position = st.st_ino, 0  # a new file: the trainer started (or truncated) it
                with path.open("rb") as f:
                    f.seek(position)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            complete = data[: data.rfind(b"\n") + 1]
            position += len(complete)
            for raw in complete.splitlines():
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if row.get("step", 0) <= shown:
                    continue
                with self._lock:
                    self._bar.update(row["step"] - shown)
                    self._bar.set_postfix(reward=f"{row.get('reward_mean', float('nan')):.3f}",
                                          p=f"{row.get('p', float('nan')):.3f}",
                                          eps=f"{row.get('eps_high', float('nan')):.3f}", refresh=True)
                shown = row["step"]
            self._stop.wait(0.5)
