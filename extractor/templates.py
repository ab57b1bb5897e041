"""Request templates of API profiles: JSON values and paths with `{placeholders}` in them.

A string that is exactly one placeholder becomes the value itself (a list of ids stays a list,
`{k}` stays a number); a placeholder inside a longer string is replaced by the value's text
(`"/users/{session_id}/items"`, URL-quoted in a path). Placeholders are recognised by shape,
`{lower_case}`, so a profile that names one recmimic does not know is refused when it loads,
not sent to the black box as a literal.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def placeholders_in(template: Any) -> set[str]:
    """Every placeholder a template holds, anywhere (keys of objects are not templated)."""
    if isinstance(template, str):
        return set(PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(placeholders_in(value) for value in template.values()))
    if isinstance(template, list):
        return set().union(*(placeholders_in(value) for value in template))
    return set()


def render(template: Any, values: dict[str, Any]) -> Any:
    """`template` with its placeholders replaced by `values` (JSON values)."""
    if isinstance(template, str):
        if template in values:
            return values[template]
        return _substitute(template, values, str)
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    return template


def render_path(template: str, values: dict[str, Any]) -> str:
    """A URL path with its placeholders replaced by their URL-quoted text."""
    return _substitute(template, values, lambda value: quote(str(value), safe=""))


def _substitute(text: str, values: dict[str, Any], as_text: Any) -> str:
    if "{" not in text:
        return text
    return PLACEHOLDER.sub(
        lambda match: as_text(values[match[0]]) if match[0] in values else match[0], text
    )
