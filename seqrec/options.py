"""What `--help` shows as the default of an option whose config class owns it.

Such options default to None in the command, so that the config (a dataclass or a pydantic
model) decides; Typer then shows no default at all. `default_of` reads the config's own
default for `show_default`, so the help shows the value a run really uses and cannot drift
from it. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def default_of(config: type, name: str, none: str = "none") -> str:
    """Field `name`'s default in `config`, as text; `none` says what a None default means."""
    if dataclasses.is_dataclass(config):
        field = {f.name: f for f in dataclasses.fields(config)}[name]
        if field.default_factory is not dataclasses.MISSING:
            value: Any = field.default_factory()
        else:
            value = field.default
    else:  # a pydantic model
        value = config.model_fields[name].get_default(call_default_factory=True)
    return none if value is None else str(value)
