"""Run a protocol's grid: validate every entry first, then each (entry, seed) as ``srkd distill``.

Each run is a child process executing exactly the command :meth:`Run.command` prints, so a run
made here, by hand or on a cluster is the same run folder. A finished run (its ``summary.json``
says it reached its last step and ``model.safetensors`` exists) is skipped; an unfinished one is
started again with the same command, which resumes it exactly from its latest checkpoint (the
engine's resume). Children die with this process (``PR_SET_PDEATHSIG``), so a killed bench
leaves no orphan training behind, and a re-run continues where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SrkdError
from .protocol import Protocol, Run

POLL_SECONDS = 1.0


def validate(protocol: Protocol, out: Path, runs: list[Run] | None = None) -> None:
    """Check the whole protocol before anything runs; raise one-line SrkdErrors naming the entry.

    Every runnable entry goes through ``srkd distill --check`` in this process (method,
    hyper-parameters, taps on the real networks, teacher, student, data, sets, run folder), so a
    bench reports a problem exactly as the single command would.
    """
    from ..cli import build_app
    from ..distill.run import resolve_teacher as _resolve_teacher
    from ..distill import get_method

    from .protocol import DEMO_TEACHER

    cfg = protocol.config
    for section in cfg:
        if section == "method":
            raise SrkdError(f"{protocol.where}: config.method is set per entry (method, set), not in config")
        if not isinstance(cfg[section], dict):
            raise SrkdError(f"{protocol.where}: config.{section} must be a mapping of options")
    if "out" in cfg.get("run", {}):
        raise SrkdError(f"{protocol.where}: config.run.out is chosen by srkd bench (--out DIR/ENTRY/seedN)")
    if "seed" in cfg.get("train", {}):
        raise SrkdError(f"{protocol.where}: config.train.seed is set by the protocol's seeds list")
    teacher = None if protocol.teacher == DEMO_TEACHER else protocol.expand(protocol.teacher)
    try:
        teacher_file, _, protocol.teacher_sha256 = _resolve_teacher(teacher)
    except SrkdError as exc:
        raise SrkdError(f"{protocol.where}: teacher: {exc}") from None
    for e in protocol.entries:  # every entry, runnable or not, names a real method with valid values
        try:
            cls = get_method(e.method)
            params = cls.Params.from_mapping({k: v for k, v in e.set.items() if "." not in k}, cls.name)
            if cls.shares_teacher:
                _check_slice(protocol, params, teacher_file.model)
        except SrkdError as exc:
            raise SrkdError(f"{protocol.where}: entry '{e.label}': {exc}") from None
    app = build_app()
    checked = set()
    for run in runs if runs is not None else protocol.runs(out):
        if run.entry.id in checked:
            continue
        checked.add(run.entry.id)
        try:
            app(args=["distill", *run.argv(), "--check", "--quiet"], standalone_mode=False, prog_name="srkd")
        except SrkdError as exc:
            raise SrkdError(f"{protocol.where}: entry '{run.entry.label}': {exc}") from None


def _check_slice(protocol: Protocol, params, teacher) -> None:
    """A method whose student is a slice of the teacher (csd) must slice out the protocol's student.

    Otherwise its row would compare a different network with the others: csd's default width 0.25
    of a 64-feature teacher is a 16-feature student beside 32-feature ones.
    """
    from ..compress import slim_config, teacher_slice_width
    from ..train import config as C
    from ..train.setup import build_student

    width = getattr(params, "width", None)
    student = build_student(C.ModelConfig(arch=protocol.student, scale=teacher.scale))
    if width is None or getattr(student, "arch", None) != getattr(teacher, "arch", None):
        return  # another family: no slice can be the protocol's student, and the table shows each size
    want, got = student.config(), slim_config(teacher, width)
    if got == want:
        return
    differ = ", ".join(f"{k}={got.get(k)} (student {want.get(k)})" for k in sorted(set(got) | set(want))
                       if got.get(k) != want.get(k))
    hint = "no width of the teacher slices out that student, so compare csd in a protocol whose student is one"
    try:
        fits = teacher_slice_width(student, teacher)
        if slim_config(teacher, fits) == want:
            hint = f"set width: {fits:g} in its 'set' to slice out the protocol's student"
    except SrkdError:
        pass  # no width of the teacher gives the student's shape
    raise SrkdError(f"its width-{width:g} slice of the teacher is not the protocol's student "
                    f"{protocol.student} ({differ}); {hint}")


# ------------------------------------------------------------------------------------- state


def run_state(folder: Path) -> tuple[str, int, int]:
    """(``done`` | ``partial`` | ``new``, steps reached, steps planned) of a run folder."""
    folder = Path(folder)
    summary = read_json(folder / "summary.json")
    planned = int(summary.get("steps") or 0)
    if summary and planned and int(summary.get("step", 0)) >= planned and (folder / "model.safetensors").is_file():
        return "done", planned, planned
    if not (folder / "config.yaml").is_file():
        return "new", 0, planned
    return "partial", last_step(folder / "metrics.jsonl"), planned


def last_step(metrics: Path) -> int:
    """The last training step logged in a metrics.jsonl (reads only its tail)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for line in reversed(tail):
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and "step" in rec:
                return int(rec["step"])
    return 0


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------ running


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the bench process dies (Linux), even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Active:
    run: Run
    proc: subprocess.Popen
    log: Path
    started: float
    device: str | None


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install counts as none
        return 0


def run_grid(protocol: Protocol, out: Path, runs: list[Run], *, jobs: int = 1, console=None, progress: bool = True) -> dict:
    """Run every unfinished run, ``jobs`` at a time (one GPU each when jobs > 1). Returns counts."""
    from rich.console import Console

    console = console or Console(stderr=True)
    out = Path(out)
    devices: list[str | None] = [None]
    if jobs > 1:
        n = gpu_count()
        if n < jobs:
            raise SrkdError(f"--jobs {jobs} runs one run per GPU and this machine has {n} GPU(s); "
                            f"use --jobs {max(n, 1)}, or --print-commands to run the grid on other machines")
        devices = [str(i) for i in range(jobs)]
    steps_total = int((protocol.config.get("train") or {}).get("steps") or 0)
    todo, counts = [], {"done": 0, "run": 0, "skipped": 0}
    for r in runs:
        state, _, _ = run_state(r.out)
        if state == "done":
            counts["skipped"] += 1
        else:
            todo.append(r)
    if counts["skipped"]:
        console.print(f"{counts['skipped']} of {len(runs)} runs already finished: skipped")
    if not todo:
        return counts
    (out / "logs").mkdir(parents=True, exist_ok=True)
    display = _GridDisplay(console, runs, todo, steps_total, progress)
    free = list(devices)
    active: list[_Active] = []
    pending = list(todo)
    failed = None
    try:
        with display:
            while pending or active:
                while pending and free and failed is None:
                    r = pending.pop(0)
                    dev = free.pop(0)
                    active.append(_launch(r, out, dev))
                    display.started(r)
                time.sleep(POLL_SECONDS)
                for a in list(active):
                    display.step(a.run, last_step(a.run.out / "metrics.jsonl"))
                    rc = a.proc.poll()
                    if rc is None:
                        continue
                    active.remove(a)
                    free.append(a.device)
                    if rc == 0 and run_state(a.run.out)[0] == "done":
                        counts["run"] += 1
                        display.finished(a.run, time.time() - a.started)
                    elif failed is None:
                        failed = (a, rc)
                if failed is not None and not active:
                    break
    except KeyboardInterrupt:
        for a in active:  # the engine checkpoints on SIGTERM and exits; a re-run resumes there
            with contextlib.suppress(ProcessLookupError):
                a.proc.send_signal(signal.SIGTERM)
        for a in active:
            with contextlib.suppress(Exception):
                a.proc.wait(timeout=120)
        raise
    if failed is not None:
        a, rc = failed
        raise SrkdError(f"run {a.run.key} failed (exit {rc}): {_last_line(a.log)} (log: {a.log})")
    counts["done"] = counts["run"] + counts["skipped"]
    return counts


def _launch(run: Run, out: Path, device: str | None) -> _Active:
    log = out / "logs" / f"{run.entry.id}-seed{run.seed}.log"
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    cmd = [sys.executable, "-m", "srkd", "distill", *run.argv(), "--quiet"]
    f = open(log, "a")
    f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {run.command()}\n")
    f.flush()
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    f.close()
    return _Active(run, proc, log, time.time(), device)


def _last_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip() and not x.startswith("# ")]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


class _GridDisplay:
    """Runs done and left, the current run's steps, and an ETA from the measured step times."""

    def __init__(self, console, runs: list[Run], todo: list[Run], steps_total, enabled: bool):
        self.console, self.enabled = console, enabled and console.is_terminal
        self.todo = {r.key: r for r in todo}
        self.n_runs = len(runs)
        self.n_done = len(runs) - len(todo)
        self.steps = steps_total or 1
        self.reached: dict[str, int] = {}
        self.rate: dict[str, float] = {}  # seconds per step by entry id, measured in this bench
        self.mark: dict[str, tuple[float, int]] = {}
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                                     transient=False)
            self.progress.start()
            self.grid = self.progress.add_task("grid", total=self.n_runs, completed=self.n_done, info="")
            self.current = {}
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def _eta(self) -> str:
        if not self.rate:
            return "ETA: after the first steps"
        mean = sum(self.rate.values()) / len(self.rate)
        left = sum((self.steps - self.reached.get(k, 0)) * self.rate.get(r.entry.id, mean) for k, r in self.todo.items())
        h, m = divmod(int(left) // 60, 60)
        return f"ETA {h}h{m:02d}m" if h else f"ETA {m}m"

    def started(self, run: Run) -> None:
        self.mark[run.key] = (time.time(), last_step(run.out / "metrics.jsonl"))
        if self.progress is not None:
            self.current[run.key] = self.progress.add_task(run.key, total=self.steps, completed=self.mark[run.key][1],
                                                           info="")
        else:
            self.console.print(f"run {run.key}: started  ({self.n_done}/{self.n_runs} done)")

    def step(self, run: Run, step: int) -> None:
        self.reached[run.key] = step
        t0, s0 = self.mark.get(run.key, (time.time(), step))
        if step > s0 + 2:
            self.rate[run.entry.id] = (time.time() - t0) / (step - s0)
        if self.progress is not None:
            rate = self.rate.get(run.entry.id)
            self.progress.update(self.current[run.key], completed=step, info=f"{rate:.2f} s/step" if rate else "")
            self.progress.update(self.grid, info=self._eta())

    def finished(self, run: Run, seconds: float) -> None:
        self.n_done += 1
        self.todo.pop(run.key, None)
        if self.progress is not None:
            self.progress.remove_task(self.current.pop(run.key))
            self.progress.update(self.grid, completed=self.n_done, info=self._eta())
            self.progress.console.print(f"run {run.key}: done in {seconds / 60:.1f} min")
        else:
            self.console.print(f"run {run.key}: done in {seconds / 60:.1f} min ({self.n_done}/{self.n_runs}); {self._eta()}")
