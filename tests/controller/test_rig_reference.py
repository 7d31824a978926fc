"""docs/rig-file.md is what the rig schema generates, and every key of every section says what it is."""

from pathlib import Path

import pytest

from controller.config import RigConfig
from controller.rig_doc import COMMAND, rig_reference, walk_sections

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_what_the_schema_generates():
    committed = (ROOT / "docs" / "rig-file.md").read_text()
    assert committed == rig_reference(), (
        f"docs/rig-file.md differs from the rig schema: run `{COMMAND}` (from the repository root) and commit it"
    )


SECTIONS = [(".".join(path), cls) for path, cls, _ in walk_sections()]


@pytest.mark.parametrize("name, cls", [("(root)", RigConfig), *SECTIONS], ids=lambda v: v if isinstance(v, str) else "")
def test_every_key_of_every_section_has_a_description(name, cls):
    missing = [key for key, field in cls.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"[{name}] keys without a description (Field(..., description=...)): {missing}"
    assert (cls.__doc__ or "").strip() and cls.__doc__ != cls.__mro__[1].__doc__, f"[{name}] has no docstring"


def test_every_section_and_key_appears_in_the_reference():
    text = rig_reference()
    for name, cls in SECTIONS:
        assert f"## [{name}]" in text or f"## [[{name}]]" in text
        for key in cls.model_fields:
            assert f"| `{key}` |" in text


def test_the_command_writes_the_reference(tmp_path, capsys):
    from controller.cli import main

    out = tmp_path / "rig-file.md"
    assert main(["rig-reference", "--out", str(out)]) == 0
    assert out.read_text() == rig_reference()
    assert main(["rig-reference"]) == 0
    assert capsys.readouterr().out.endswith(rig_reference())
