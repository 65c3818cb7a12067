"""Each backend's command-line flags, registered from its ``Backend.flags`` (as Polygraphy's argument groups
are), and read back into its options: a new backend's flags appear in ``--help`` without editing ``cli.py``."""

from __future__ import annotations

import argparse
from dataclasses import fields

from .base import REGISTRY, Backend, backend_class


def _owners() -> list[type[Backend]]:
    """One backend class per options type (backends that share options share their flags)."""
    seen, out = set(), []
    for name in REGISTRY:
        cls = backend_class(name)
        if cls.options_type not in seen:
            seen.add(cls.options_type)
            out.append(cls)
    return out


def _dest(cls: type[Backend], field: str) -> str:
    return f"backend__{cls.options_type.__name__}__{field}"


def add_backend_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add every backend's flags that apply to ``command``, one argument group per backend."""
    for cls in _owners():
        mine = [f for f in cls.flags if command in f.commands]
        if not mine:
            continue
        group = parser.add_argument_group(f"{cls.name} backend")
        defaults = {f.name: f.default for f in fields(cls.options_type)}
        for f in mine:
            default = defaults.get(f.field)
            shown = "" if default is None or "default" in f.help else f" (default {default})"
            group.add_argument(f.flag, dest=_dest(cls, f.field), type=f.type, choices=f.choices, metavar=f.metavar,
                               default=None, help=f.help.replace("%", "%%") + shown)


def backend_options(args: argparse.Namespace) -> tuple[object, ...]:
    """Every backend's options, from the flags given in ``args`` (the options' defaults for the rest)."""
    out = []
    for cls in _owners():
        given = {f.field: getattr(args, _dest(cls, f.field)) for f in cls.flags
                 if getattr(args, _dest(cls, f.field), None) is not None}
        out.append(cls.options_type(**given))
    return tuple(out)
