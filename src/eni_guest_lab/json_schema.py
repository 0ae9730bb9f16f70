"""A JSON Schema checker for the subset docs/show.schema.json uses (no dependency needed).

Keywords: type (one or a list), const, enum, properties, required, additionalProperties
(false), items, minimum, maximum, pattern.  `problems(doc, schema)` lists every place where
`doc` breaks the schema, as "$.enis[0].mtu: 1.5 is not of type integer/null"; an unknown
keyword is a problem too, so the schema cannot silently use one this checker ignores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

KNOWN = {
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "const",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "pattern",
}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
SHOW_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "show.schema.json"


def load_show_schema() -> dict[str, Any]:
    return json.loads(SHOW_SCHEMA.read_text())


def problems(doc: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every way `doc` breaks `schema` (empty: it follows it)."""
    out = [f"{where}: unknown schema keyword {k!r}" for k in schema if k not in KNOWN]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(TYPES[k](doc) for k in kinds):
            return out + [f"{where}: {doc!r} is not of type {'/'.join(kinds)}"]
    if "const" in schema and doc != schema["const"]:
        out.append(f"{where}: {doc!r} is not {schema['const']!r}")
    if "enum" in schema and doc not in schema["enum"]:
        out.append(f"{where}: {doc!r} is not one of {schema['enum']!r}")
    if isinstance(doc, (int, float)) and not isinstance(doc, bool):
        if "minimum" in schema and doc < schema["minimum"]:
            out.append(f"{where}: {doc} < {schema['minimum']}")
        if "maximum" in schema and doc > schema["maximum"]:
            out.append(f"{where}: {doc} > {schema['maximum']}")
    if isinstance(doc, str) and "pattern" in schema and not re.search(schema["pattern"], doc):
        out.append(f"{where}: {doc!r} does not match {schema['pattern']!r}")
    if isinstance(doc, dict):
        props = schema.get("properties", {})
        out += [f"{where}: {k!r} missing" for k in schema.get("required", []) if k not in doc]
        if schema.get("additionalProperties", True) is False:
            out += [f"{where}: {k!r} is not in the schema" for k in doc if k not in props]
        for k, sub in props.items():
            if k in doc:
                out += problems(doc[k], sub, f"{where}.{k}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            out += problems(item, schema["items"], f"{where}[{i}]")
    return out
