"""How the CLI talks to a person: plain help, one-line errors, columns that are never cut."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand

console = Console()


class _Command(TyperCommand):
    """Usage lines name arguments as ``PROMPT`` rather than Typer's ``{prompt}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.display_name_raw.upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class Typer(typer.Typer):
    """Help in click's plain layout: defaults and environment variables shown, no ``<bool>`` on flags,
    sentences rewrapped whole rather than broken where the source line ended."""

    def __init__(self, help: str) -> None:
        super().__init__(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None)

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
