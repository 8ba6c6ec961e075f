"""How the CLI talks to a person: plain help, one-line errors, columns that are never cut."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperOption

console = Console()


class _Command(TyperCommand):
    """Values named as a person reads them, ``--data-dir DIR`` and ``PROMPT``, rather than Typer's
    ``<path>`` and ``{prompt}``; an option that sets its own metavar (``URL``) keeps it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None or param.name is None:
                continue
            if isinstance(param, TyperArgument):
                param.metavar = param.name.upper()
            elif isinstance(param, TyperOption) and not param.is_flag:
                param.metavar = param.name.rsplit("_", 1)[-1].upper()  # the value's noun: RATIO, DIR

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Typer's sections, with each argument under its usage name and no ``<str>`` beside it."""
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((_argument(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _argument(param: TyperArgument) -> str:
    return param.display_name_raw + ("..." if param.nargs != 1 else "")


class Typer(typer.Typer):
    """Help in click's plain layout: defaults and environment variables shown, no ``<bool>`` on flags,
    sentences rewrapped whole rather than broken where the source line ended. An exception no command
    turned into a line is Python's plain traceback, not Rich's page of frames."""

    def __init__(self, help: str) -> None:
        super().__init__(
            help=help,
            no_args_is_help=True,
            add_completion=False,
            rich_markup_mode=None,
            pretty_exceptions_enable=False,
        )

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


def fail(message: str) -> NoReturn:
    """One red line and exit status 1: what a person reads instead of a traceback."""
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def say(message: str, style: str | None = None) -> None:
    console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + "."


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def columns(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Aligned columns that are never cut or wrapped, whatever the terminal's width: ids get copied."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        say("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
