"""The rig-file reference, docs/rig-file.md, written from the rig schema itself (`cortexloop rig-reference`).

One table per section, in rig-file order, nested sections right after their parent ([cortex], then
[cortex.population], ...): each key's type, default, bounds (the schema's ge/gt/le/lt, lengths and patterns)
and description. Nothing here is written by hand: a key added to a section appears with its own description,
and tests/controller/test_rig_reference.py fails while the committed file is behind the schema.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from controller.config import MOVED_KEYS, RETIRED_KEYS, RigConfig

COMMAND = "cortexloop rig-reference --out docs/rig-file.md"


def _section_class(annotation) -> tuple[type[BaseModel] | None, bool, bool]:
    """(the section class a field holds, whether it is optional, whether it is an array of such tables)."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) != 1:
            return None, optional, False
        annotation = rest[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, optional, False
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, optional, True
    return None, optional, False


def _type_text(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args if a is not type(None))
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return f"list of {_type_text(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    if origin is dict:
        return f"table of {_type_text(args[1])}"
    return {str: "string", int: "int", float: "float", bool: "bool"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _number(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else repr(v)


def _constraints(metadata, what: str) -> list[str]:
    """Bounds in words from a field's metadata (annotated_types and pydantic's pattern)."""
    out = []
    lengths = {type(m): m for m in metadata if isinstance(m, (at.MinLen, at.MaxLen))}
    if at.MinLen in lengths and at.MaxLen in lengths:
        out.append(f"{lengths[at.MinLen].min_length} to {lengths[at.MaxLen].max_length} {what}")
        metadata = [m for m in metadata if not isinstance(m, (at.MinLen, at.MaxLen))]
    for m in metadata:
        if isinstance(m, FieldInfo):  # Annotated[x, Field(...)] inside a tuple or list
            out += _constraints(m.metadata, what)
        elif isinstance(m, at.Ge):
            out.append(f">= {_number(m.ge)}")
        elif isinstance(m, at.Gt):
            out.append(f"> {_number(m.gt)}")
        elif isinstance(m, at.Le):
            out.append(f"<= {_number(m.le)}")
        elif isinstance(m, at.Lt):
            out.append(f"< {_number(m.lt)}")
        elif isinstance(m, at.MinLen):
            out.append(f"at least {m.min_length} {what}")
        elif isinstance(m, at.MaxLen):
            out.append(f"at most {m.max_length} {what}")
        elif getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    return out


def _bounds(field: FieldInfo) -> str:
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    plain = (
        args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1 else annotation
    )
    origin = typing.get_origin(plain)
    what = "characters" if plain is str else "entries"
    out = _constraints(field.metadata, what)
    if origin in (list, tuple):
        inner = []
        for a in typing.get_args(plain):
            if typing.get_origin(a) is typing.Annotated:
                inner = _constraints(typing.get_args(a)[1:], "characters" if typing.get_args(a)[0] is str else "")
        if inner:
            out.append("each " + ", ".join(inner))
    return ", ".join(out)


def _toml(v) -> str:
    """A default as it would be written in the rig file."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }" if v else "{}"
    return str(v)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(title: str) -> str:
    """The anchor a Markdown renderer (GitHub's) gives a heading."""
    return "".join(c for c in title.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def _link(title: str) -> str:
    return f"[`{title}`](#{_anchor(title)})"


def walk_sections(cls: type[BaseModel] = RigConfig, path: tuple[str, ...] = ()):
    """(path, section class, array of tables?) of every section under `cls`, in rig-file order, parents first."""
    for name, field in cls.model_fields.items():
        sub, _, array = _section_class(field.annotation)
        if sub is not None:
            yield path + (name,), sub, array
            yield from walk_sections(sub, path + (name,))


def section_title(path: tuple[str, ...], array: bool) -> str:
    return f"[[{'.'.join(path)}]]" if array else f"[{'.'.join(path)}]"


def _rows(cls: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    rows = []
    for name, field in cls.model_fields.items():
        sub, optional, array = _section_class(field.annotation)
        if sub is not None:
            title = section_title(path + (name,), array)
            kind = "array of tables" if array else "section"
            default = "none" if array else ("unset" if optional else "its defaults")
            rows.append(f"| `{name}` | {kind} {_link(title)} | {default} |  | {_cell(field.description or '')} |")
            continue
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = "unset" if value is None else f"`{_cell(_toml(value))}`"
        rows.append(
            f"| `{name}` | {_cell(_type_text(field.annotation))} | {default} | {_cell(_bounds(field))} | "
            f"{_cell(field.description or '')} |"
        )
    return rows


def rig_reference() -> str:
    """docs/rig-file.md: the whole rig-file format, from the schema."""
    lines = [
        "# Rig file reference",
        "",
        f"Generated from the rig schema (controller/rig_doc.py) by `{COMMAND}`; do not edit it by hand.",
        "",
        "A rig file is TOML. Every section and key may be left out (its default is used) unless marked required; "
        "an unknown key, a value of the wrong type or out of bounds is refused with the file, the key and why. "
        "`cortexloop check RIG` validates a rig file and prints it resolved. Lists are TOML arrays, tables TOML "
        "inline tables; an unset key is written by leaving it out.",
        "",
        "| section | what it is |",
        "| --- | --- |",
    ]
    for name, field in RigConfig.model_fields.items():
        lines.append(f"| {_link(f'[{name}]')} | {_cell(field.description or '')} |")
    for path, cls, array in walk_sections():
        title = section_title(path, array)
        lines += ["", f"## {title}", "", inspect.cleandoc(cls.__doc__ or ""), ""]
        lines += ["| key | type | default | bounds | description |", "| --- | --- | --- | --- | --- |"]
        lines += _rows(cls, path)
    lines += [
        "",
        "## Keys that moved or were retired",
        "",
        "A rig file with one of these keys in its old place is refused with where it belongs now. A stored "
        "session's rig (its rig.json) still opens: a moved key is read in its new place, a retired one is dropped.",
        "",
        "| key | now |",
        "| --- | --- |",
    ]
    for old, new in MOVED_KEYS.items():
        lines.append(f"| `{'.'.join(old)}` | `{new}.{old[-1]}` |")
    for old, why in RETIRED_KEYS.items():
        lines.append(f"| `{'.'.join(old)}` | retired: {_cell(why)} |")
    return "\n".join(lines) + "\n"


def write_rig_reference(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rig_reference())
    return path
