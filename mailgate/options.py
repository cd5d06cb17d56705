"""The machinery behind mailgate's settings table (celery's ``Option``, flower's ``define()``).

A setting is declared once, as a field of :class:`mailgate.config.Settings` built with
:func:`setting`: its default, the parser that checks a value, and one line of help. Everything
else comes from that declaration: the variable ``MAILGATE_<FIELD>``, reading and checking it
(a bad value raises :class:`ConfigError` naming the variable), and the documentation table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from mailgate.errors import ConfigError

T = TypeVar("T")

PREFIX = "MAILGATE_"


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting: variable, default, parser, help (``shown``: the default as documented)."""

    variable: str
    default: T
    parse: Callable[[str], T]
    help: str
    shown: str | None = None

    def read(self, environ: Mapping[str, str]) -> T:
        """The value in ``environ`` (empty counts as unset), or the default."""
        raw = environ.get(self.variable, "").strip()
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(self.variable, str(exc)) from None

    def row(self) -> str:
        """This setting's line in the Markdown table."""
        default = self.shown if self.shown is not None else _shown(self.default)
        return f"| `{self.variable}` | {default} | {self.help} |"


def setting(
    default: T,
    parse: Callable[[str], T],
    help: str,
    *,
    shown: str | None = None,
    variable: str = "",
    secret: bool = False,
) -> T:
    """A :class:`Settings` field declared with everything about it (the variable is derived from
    the field's name unless given)."""
    option: Option[T] = Option(variable, default, parse, help, shown)
    return field(default=default, repr=not secret, metadata={"option": option})


def options(cls: type[Any]) -> Iterator[tuple[str, Option[Any]]]:
    """Each field of a settings dataclass and its option (variable filled in), in order."""
    for item in fields(cls):
        yield item.name, _option(item)


def option(cls: type[Any], name: str) -> Option[Any]:
    """The option behind one field, to read that setting alone (e.g. on every log record)."""
    return _option(next(item for item in fields(cls) if item.name == name))


def _option(item: Field[Any]) -> Option[Any]:
    option: Option[Any] = item.metadata["option"]
    if option.variable:
        return option
    return Option(
        PREFIX + item.name.upper(), option.default, option.parse, option.help, option.shown
    )


def markdown(cls: type[Any]) -> str:
    """The documentation table of every setting, generated from the declarations."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [option.row() for _, option in options(cls)]
    return "\n".join(lines) + "\n"


def _shown(default: object) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return f"`{int(default)}`"
    if default in ("", ()):
        return "empty"
    if isinstance(default, Path | int | float | str):
        text = f"{default:g}" if isinstance(default, float) else str(default)
        return f"`{text}`"
    raise TypeError(f"give shown= for the default {default!r}")
