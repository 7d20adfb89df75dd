"""The reference in docs/ and the starter file both follow the settings model."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tmi_cluster.config import RESERVED_ENV, Settings, load_settings
from tmi_cluster.config.reference import _RESERVED_USES, reference_markdown, starter_toml

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_reference_is_current() -> None:
    assert DOCS.read_text(encoding="utf-8") == reference_markdown(), (
        "regenerate with: python -m tmi_cluster.config.reference > docs/configuration.md"
    )


def test_starter_file_loads_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tmi-cluster.toml"
    path.write_text(starter_toml(), encoding="utf-8")
    tomllib.loads(path.read_text())
    loaded = load_settings(path, environ={})
    assert loaded.model_dump(exclude={"database", "redis"}) == Settings().model_dump(
        exclude={"database", "redis"}
    )


def test_starter_file_names_every_key_at_its_default() -> None:
    text = starter_toml()
    uncommented = "\n".join(
        line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line
    )
    headers = [line for line in text.splitlines() if line.startswith("[")]
    assert "[auto_scale.thresholds]" in headers
    assert "scale_out = 70.0" in uncommented
    assert 'use = "dummy"' in uncommented


def test_reference_explains_every_reserved_variable() -> None:
    assert set(_RESERVED_USES) == RESERVED_ENV
    text = reference_markdown()
    for name, _ in _RESERVED_USES.values():
        assert f"`{name}`" in text
