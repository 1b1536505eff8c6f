"""The ``srkd`` command line: a thin Typer layer over the library.

Each command lives in its own module with a ``register(app)`` function; this module assembles
them and turns every :class:`~srkd.errors.SrkdError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import SrkdError

COMMAND_MODULES = ("models", "convert", "eval", "data", "upscale", "train", "compress", "distill", "bench", "export", "push")


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="srkd",
        help="Train, distill, compress, evaluate and run super-resolution networks.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # click's plain help: 50 columns of text at 80, not a squeezed rich table
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # command not built in this version
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    app = build_app()
    try:
        # without standalone mode click returns a command's typer.Exit code instead of raising it
        code = app(args=argv, standalone_mode=False, prog_name="srkd")
    except SrkdError as exc:
        print(f"srkd: error: {exc}", file=sys.stderr)
        return _exit(2, argv)
    except KeyboardInterrupt:
        print("srkd: interrupted", file=sys.stderr)
        return _exit(130, argv)
    except typer.Exit as exc:
        return _exit(exc.exit_code, argv)
    except Exception as exc:  # click usage errors carry their own exit codes
        # Typer >= 0.29 vendors click as typer._click, whose exception classes are not click's:
        # accept both, or a bad option value would end in a traceback.
        kinds = {c.__name__ for c in type(exc).__mro__}
        if "ClickException" in kinds and hasattr(exc, "show"):
            exc.show()
            return _exit(int(getattr(exc, "exit_code", 2)), argv)
        if "Abort" in kinds:
            print("srkd: aborted", file=sys.stderr)
            return _exit(1, argv)
        raise
    return _exit(code if isinstance(code, int) else 0, argv)


def _exit(code: int, argv) -> int:
    if argv is None:
        sys.exit(code)
    return code
