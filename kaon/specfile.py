"""Reading a spec file: the one YAML/JSON reader behind `kaon train` and `kaon jobs submit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kaon.errors import ConfigError


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) file, or a ConfigError that says what is wrong."""
    import yaml

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"Spec file {path} {what}.",
                          hint="Pass a YAML file such as examples/mnist_mlp.yaml.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Spec file {path} is not valid YAML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"Spec file {path} cannot be read as UTF-8 text: {exc}.",
                          hint="Save the spec as a UTF-8 YAML file.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Spec file {path} must hold a mapping at the top level.")
    return raw
