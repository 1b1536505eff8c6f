"""Compression: channel-split (slimmable) networks and the plain students cut out of them.

* :mod:`srkd.compress.slim`: which channels a width keeps, per architecture (its ``ArchSpec``
  slicing rules), the sliced forward CSD trains through, the sliced state dict;
* :mod:`srkd.compress.extract`: the standalone student of a width, the teacher-slice warm start,
  and the report of what a width buys (parameters, multiply-adds, time, PSNR).

``srkd.compress(model, width, output)`` is what ``srkd compress`` runs (this module is callable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._callable import make_callable
from ..complexity import measure_seconds, measure_seconds_many  # noqa: F401 - part of this API since 0.1
from .extract import (  # noqa: F401 - the compression API
    CompressionReport,
    WidthReport,
    compression_report,
    extract_student,
    init_from_teacher_slice,
    macs_of,
    model_spec,
    teacher_slice_width,
    width_from_provenance,
)
from .slim import Slimmable, check_width, slim_config, slim_forward, slim_state_dict, split_channels  # noqa: F401


@dataclass
class CompressResult:
    """What :func:`compress` returns: the plain student, where it was written, and the report."""

    student: object  # nn.Module
    width: float
    output: Path | None
    report: CompressionReport | None
    teacher: object = None  # the source network


def check_speed_size(speed_size: int) -> None:
    """The timing input's side: at least 8 pixels (checked before anything is written)."""
    from ..errors import SrkdError

    if speed_size < 8:
        raise SrkdError(f"--speed-size must be at least 8 pixels, got {speed_size}")


def cut(model, width: float | None = None, output: str | Path | None = None, *, scale: int | None = None,
        overwrite: bool = False) -> CompressResult:
    """Cut the width-``width`` student out of ``model`` (reference or ModelFile) and write it to
    ``output`` (safetensors with provenance; None: not written). No measurement: ``report`` is None.

    ``width`` None: the width a CSD run recorded in the file.
    """
    from ..errors import SrkdError
    from ..io.checkpoint import save_model
    from ..io.files import check_writable
    from ..io.hub import load_model

    output = Path(output) if output is not None else None
    if output is not None:
        check_writable(output, overwrite)
    loaded = load_model(model, scale=scale) if isinstance(model, (str, Path)) else model
    if width is None:
        width = width_from_provenance(loaded.metadata)
        if width is None:
            raise SrkdError(f"{loaded.path.name} records no student width; give one with --width (e.g. --width 0.25)")
    width = check_width(width)
    teacher = loaded.model
    student = extract_student(teacher, width)
    written = None
    if output is not None:
        provenance = {"method": "compress", "width": width, "source": str(loaded.path), "source_arch": teacher.arch,
                      "source_config": teacher.config()}
        if loaded.provenance:
            provenance["source_provenance"] = loaded.provenance
        written = save_model(student, output, provenance=provenance, overwrite=overwrite)
    return CompressResult(student, width, written, None, teacher)


def compress(model, width: float | None = None, output: str | Path | None = None, *, scale: int | None = None,
             datasets=("set5",), data_root=None, speed_size: int = 64, repeats: int = 3, precision: str = "fp32",
             eval_precision: str = "fp32", device: str = "auto", overwrite: bool = False) -> CompressResult:
    """:func:`cut`, then what the width buys: parameters, multiply-adds, time and PSNR of both widths.

    ``datasets`` empty: no PSNR; ``repeats`` 0: no timing. Raises :class:`~srkd.errors.SrkdError`
    for anything the user can fix.
    """
    check_speed_size(speed_size)
    result = cut(model, width, output, scale=scale, overwrite=overwrite)
    return measure(result, datasets=datasets, data_root=data_root, speed_size=speed_size, repeats=repeats,
                   precision=precision, eval_precision=eval_precision, device=device)


def measure(result: CompressResult, *, datasets=("set5",), data_root=None, speed_size: int = 64, repeats: int = 3,
            precision: str = "fp32", eval_precision: str = "fp32", device: str = "auto") -> CompressResult:
    """Fill ``result.report``: the cut student against its source (:func:`compression_report`)."""
    result.report = compression_report(result.teacher, result.student, result.width, (speed_size, speed_size), repeats,
                                       precision, device, tuple(datasets or ()), data_root, eval_precision)
    return result


make_callable(__name__, compress)
