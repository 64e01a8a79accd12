"""The one spec-file reader: YAML or JSON, a mapping, in UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaon.errors import ConfigError
from kaon.specfile import read_spec_file


def test_a_spec_file_is_a_utf8_yaml_mapping(tmp_path: Path) -> None:
    good = tmp_path / "ok.yaml"
    good.write_text("name: digits\nepochs: 2\n", encoding="utf-8")
    assert read_spec_file(good) == {"name": "digits", "epochs": 2}
    for name, content, message in (
            ("latin1.yaml", "name: caf\xe9\n".encode("latin-1"), "UTF-8"),
            ("broken.yaml", b"name: [digits\n", "not valid YAML"),
            ("list.yaml", b"- 1\n- 2\n", "mapping at the top level")):
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            read_spec_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_spec_file(tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        read_spec_file(tmp_path)
