"""What a training run shows: a rich progress bar on a terminal, plain periodic lines otherwise,
and the SIGINT/SIGTERM handling that lets a run stop at a step boundary with a checkpoint."""

from __future__ import annotations

import signal
import threading
import time


class Display:
    """Rich progress bar on a terminal; plain periodic lines otherwise (logs, nohup)."""

    def __init__(self, console, total: int, start: int, enabled: bool):
        self.console, self.total, self.enabled = console, total, enabled
        self.bar = None
        self.last_line, self.last_step = time.monotonic(), start
        self.fields = {"loss": "-", "lr": "-", "val": "-", "ips": "-"}
        if enabled and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[ips]} it/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}"),
                TextColumn("lr {task.fields[lr]}"), TextColumn("val {task.fields[val]}"), console=console,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, **self.fields)

    def update(self, step: int, **fields) -> None:
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **fields)
        elif self.enabled and step != self.last_step and (time.monotonic() - self.last_line > 60 or step == self.total):
            self.last_line, self.last_step = time.monotonic(), step
            f = self.fields
            self.console.print(f"step {step}/{self.total}  {f['ips']} it/s  loss {f['loss']}  lr {f['lr']}  val {f['val']}")

    def print(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class StopSignals:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without the checkpoint
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
