"""Bench protocols: what a comparison of distillation methods holds constant, read from YAML.

A protocol names one teacher, one student (and how it starts), one engine configuration, the
validation sets and the seeds; its entries vary only the method and its hyper-parameters::

    name: mini-x4
    teacher: demo                          # the bundled demo teacher; or a path, preset or hf://
    student: edsr-baseline:n_feats=32
    config:                                # srkd's training config (docs/training.md), any section
      data: {sources: [$SRKD_DATA/train/T91], patch: 32, batch: 16}
      train: {steps: 2000, precision: bf16, ema: 0.999}
      val: {sets: [set5], every: 300, final_sets: [set14, b100, urban100]}
    seeds: [0, 1, 2]
    entries:
      - {label: scratch, method: scratch}
      - {label: kd, method: kd}
      - {label: "csd (lambda_cl 0)", id: csd-cl0, method: csd, set: {lambda_cl: 0}}
      - {label: dckd, method: dckd, requires: vqgan}   # listed, not run: the table says why

Every (entry, seed) becomes one ordinary ``srkd distill`` command (:meth:`Run.argv`), so a run
made by ``srkd bench``, by hand or by a cluster scheduler is the same run folder.
Environment variables in paths (``$SRKD_DATA``) are expanded when the commands are made; the
protocol hash (:attr:`Protocol.hash`) is taken over the unexpanded text and the teacher's
sha256, so the same protocol on two machines has the same hash.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SrkdError

TOP_KEYS = ("name", "description", "teacher", "student", "init", "config", "seeds", "entries", "notes")
ENTRY_KEYS = ("label", "id", "method", "set", "student", "init", "requires", "note")
# What an entry may need that a machine may lack; a protocol lists such entries, srkd bench
# reports them as not run (with the reason) instead of failing or dropping the row.
REQUIREMENTS = {
    "vqgan": "needs VQGAN weights",
    "vgg": "needs VGG-19 ImageNet weights",
    "gpu": "needs a GPU",
}
DEMO_TEACHER = "demo"  # the bundled demo teacher (srkd distill's default)
SCRATCH = "scratch"  # the label the gains are measured against


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"


def slug(text: str) -> str:
    """A folder name from a label: lower case, [a-z0-9._+-], runs of anything else as one '-'."""
    s = re.sub(r"[^a-z0-9._+]+", "-", text.lower()).strip("-")
    return s or "entry"


@dataclass
class Entry:
    label: str
    method: str
    id: str = ""
    set: dict[str, Any] = field(default_factory=dict)
    student: str | None = None  # overrides the protocol's student for this entry
    init: str | None = None
    requires: str | None = None
    note: str = ""

    @property
    def runnable(self) -> bool:
        return self.requires is None

    @property
    def not_run_reason(self) -> str:
        return f"not run: {REQUIREMENTS.get(self.requires, 'needs ' + str(self.requires))}" if self.requires else ""


@dataclass
class Run:
    """One (entry, seed): its folder and its ``srkd distill`` command line."""

    protocol: Protocol
    entry: Entry
    seed: int
    out: Path

    @property
    def key(self) -> str:
        return f"{self.entry.id}/seed{self.seed}"

    def argv(self) -> list[str]:
        """Arguments of ``srkd distill`` (without the program name) that make this run."""
        p, e = self.protocol, self.entry
        args = ["--method", e.method]
        if p.teacher and p.teacher != DEMO_TEACHER:
            args += ["--teacher", p.expand(p.teacher)]
        shares = _shares_teacher(e.method)
        student = e.student if e.student is not None else (None if shares else p.student)
        init = e.init if e.init is not None else (None if shares else p.init)
        if student:
            args += ["--student", student]
        if init:
            args += ["--init", p.expand(init)]
        for key, value in _flatten(p.config):
            if key == "data.sources":
                for src in value:
                    args += ["--data", p.expand(str(src))]
            elif key in ("train.seed", "run.out", "run.label", "run.protocol"):
                continue  # set per run below
            else:
                args += ["--set", f"{key}={_yaml_value(value)}"]
        for key, value in e.set.items():
            if "." not in key and isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)  # method hyper-parameters read lists as a,b,c
            args += ["--set", f"{key}={value if '.' not in key else _yaml_value(value)}"]
        args += ["--seed", str(self.seed), "--set", f"run.label={_yaml_value(e.label)}",
                 "--set", f"run.protocol={p.hash}", "--out", str(self.out)]
        return args

    def command(self) -> str:
        import shlex

        return shlex.join(["srkd", "distill", *self.argv(), "--quiet"])


def _shares_teacher(method: str) -> bool:
    from ..distill import get_method

    return bool(get_method(method).shares_teacher)


def _yaml_value(value) -> str:
    """A value as ``--set`` reads it back (YAML): scalars plain, lists and mappings as flow JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = str(value)
    # strings YAML would read as something else keep their type through quoting
    if isinstance(value, str) and yaml.safe_load(text) != value:
        return json.dumps(value)
    return text


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "." not in prefix:  # sections hold keys; a mapping below is a value
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


@dataclass
class Protocol:
    name: str
    teacher: str
    student: str
    config: dict[str, Any]
    seeds: list[int]
    entries: list[Entry]
    init: str | None = None
    description: str = ""
    path: Path | None = None
    teacher_sha256: str = ""  # filled by resolve_teacher()
    raw_text: str = ""

    @property
    def hash(self) -> str:
        """Hash of what the protocol holds constant (not its seeds or entries), 16 hex digits."""
        held = {"teacher": self.teacher_sha256 or self.teacher, "student": self.student, "init": self.init,
                "config": self.config}
        return hashlib.sha256(json.dumps(held, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def expand(self, text: str) -> str:
        """Environment variables and ~ expanded; a relative path is taken from the protocol's folder."""
        value = os.path.expanduser(os.path.expandvars(text))
        if "$" in value:
            var = re.search(r"\$\{?(\w+)", value).group(1)
            raise SrkdError(f"{self.where}: {text} uses ${var}, which is not set; export it (e.g. SRKD_DATA=/path/to/data)")
        if self.path is not None and not value.startswith(("hf://", "/")) and (self.path.parent / value).exists():
            value = str((self.path.parent / value).resolve())
        return value

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "protocol"

    def entry(self, label_or_id: str) -> Entry:
        for e in self.entries:
            if label_or_id in (e.label, e.id):
                return e
        raise SrkdError(f"no entry '{label_or_id}' in {self.where} (entries: {', '.join(e.id for e in self.entries)})")

    def runs(self, out: Path, only: list[str] | None = None, seeds: list[int] | None = None) -> list[Run]:
        """Runnable (entry, seed) pairs in the order they run: seed by seed, so that a partial grid
        already holds complete pairs for the paired differences."""
        entries = [self.entry(x) for x in only] if only else self.entries
        chosen = self.seeds if seeds is None else seeds
        for s in chosen:
            if s not in self.seeds:
                raise SrkdError(f"seed {s} is not in the protocol's seeds ({', '.join(map(str, self.seeds))})")
        return [Run(self, e, s, Path(out) / e.id / f"seed{s}") for s in chosen for e in entries if e.runnable]


def load_protocol(path, text: str | None = None) -> Protocol:
    """Read and check the file's shape; methods, values and files are checked by :func:`srkd.bench.validate`.

    ``text``: the protocol's YAML as kept elsewhere (a results.json); ``path`` then only names it."""
    path = Path(path)
    if text is None:
        if not path.is_file():
            raise SrkdError(f"protocol file not found: {path}")
        text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SrkdError(f"{path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SrkdError(f"{path} must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise SrkdError(f"{path}: unknown key '{key}'{_suggest(key, TOP_KEYS)}")
    for key in ("student", "entries"):
        if not raw.get(key):
            raise SrkdError(f"{path}: '{key}' is required")
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise SrkdError(f"{path}: 'config' must be a mapping of sections (data, optim, schedule, train, val, run)")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SrkdError(f"{path}: 'seeds' must be a list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SrkdError(f"{path}: 'seeds' lists a seed twice: {seeds}")
    entries, ids = [], set()
    for i, item in enumerate(raw["entries"]):
        where = f"{path}: entries[{i}]"
        if not isinstance(item, dict):
            raise SrkdError(f"{where} must be a mapping with 'label' and 'method'")
        for key in item:
            if key not in ENTRY_KEYS:
                raise SrkdError(f"{where}: unknown key '{key}'{_suggest(key, ENTRY_KEYS)}")
        if not item.get("method"):
            raise SrkdError(f"{where}: 'method' is required")
        label = str(item.get("label") or item["method"])
        sets = item.get("set") or {}
        if not isinstance(sets, dict):
            raise SrkdError(f"{where} ({label}): 'set' must be a mapping of NAME: VALUE")
        req = item.get("requires")
        if req is not None and str(req) not in REQUIREMENTS:
            raise SrkdError(f"{where} ({label}): unknown requirement '{req}'{_suggest(str(req), REQUIREMENTS)}")
        entry = Entry(label=label, method=str(item["method"]), id=slug(str(item.get("id") or label)), set=dict(sets),
                      student=item.get("student"), init=item.get("init"), requires=req, note=str(item.get("note") or ""))
        if entry.id in ids:
            raise SrkdError(f"{where}: two entries share the id '{entry.id}'; give one an 'id'")
        ids.add(entry.id)
        entries.append(entry)
    return Protocol(name=str(raw.get("name") or path.stem), teacher=str(raw.get("teacher") or DEMO_TEACHER),
                    student=str(raw["student"]), init=raw.get("init"), config=config, seeds=seeds, entries=entries,
                    description=str(raw.get("description") or ""), path=path.resolve(), raw_text=text)
