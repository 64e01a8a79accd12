"""The one rule for names users choose (models, aliases, datasets, runs' specs).

Lower-case letters, digits, '.', '_' and '-', 1-64 characters, starting with a letter or digit:
safe as a folder name and in a URL, and never a path (``../``) or an SQL fragment.
"""

from __future__ import annotations

import re

MAX_NAME = 64
NAME_PATTERN = rf"^[a-z0-9][a-z0-9._-]{{0,{MAX_NAME - 1}}}$"
_NAME = re.compile(NAME_PATTERN)


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None
