"""The user's files, read and checked in one place before any work: run files, batch files, data
manifests, prompt files. Each kind has one declared JSON schema (checked with ``jsonschema``);
every failure is one ``ValueError`` line that names the file and, where one is at fault, the key.

- :func:`read_yaml`: a YAML file as data, or one line for an unreadable file, a byte that is not
  UTF-8, or a YAML syntax error (with its line and column);
- :func:`check_schema`: data against a schema (below), plus what a schema cannot say: no NaN or
  infinite number anywhere;
- :func:`read_text_lines`: a prompt file's non-empty lines; empty or non-UTF-8 files refused;
- :func:`check_json_file`: a JSON file parses (a truncated COCO captions file fails here, not in a
  kernel).

The bottom layer with :mod:`dptlib.config`: it imports nothing of ``dptlib``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import yaml
from safetensors import SafetensorError, safe_open

# a notebook's parameters: names checked against the notebook's parameters cell later (checks.check_parameters)
PARAMETERS = {"type": "object", "propertyNames": {"type": "string", "pattern": r"^[A-Za-z_]\w*$"}}
RUN_FILE = {
    "type": "object",
    "required": ["notebook"],
    "additionalProperties": False,
    "properties": {"notebook": {"type": "string", "minLength": 1}, "parameters": {"anyOf": [PARAMETERS, {"type": "null"}]}},
}
BATCH_FILE = {
    "type": "object",
    "required": ["notebook"],
    "additionalProperties": False,
    "properties": {
        "notebook": {"type": "string", "minLength": 1},
        "shared": {"anyOf": [PARAMETERS, {"type": "null"}]},
        "sweep": {"type": "string", "minLength": 1},
        "values": {"type": "array", "minItems": 1},
        "variants": {"type": "object", "minProperties": 1, "additionalProperties": {"anyOf": [PARAMETERS, {"type": "null"}]}},
        "reference": {"type": "string"},
        "at_scale": {"type": "object", "additionalProperties": {"anyOf": [PARAMETERS, {"type": "null"}]}},
        "training_seeds": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 0}},
    },
    "dependentRequired": {"sweep": ["values"], "values": ["sweep"]},
    "anyOf": [{"required": ["sweep"]}, {"required": ["variants"]}],
}
# a split's keys and files are checked where they are read (dptlib.data.manifest), naming the split
MANIFEST = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": {"type": "object", "additionalProperties": {"type": ["string", "boolean", "object"]}},
}
SCHEMA_HINTS = {  # what a failure of each schema says is allowed
    id(RUN_FILE): "a run file has 'notebook' and 'parameters' (a mapping of parameter names)",
    id(BATCH_FILE): "a batch file has 'notebook', and 'sweep' with 'values', or 'variants', or both (variants: a mapping of names "
                    "to parameters); optionally 'shared', 'reference', 'at_scale', 'training_seeds'",
    id(MANIFEST): "a manifest maps each split to {captions, refexp, images, referred_only}, or to {itm: {...}, rec: {...}}",
}


def read_utf8(path: str | Path, what: str = "file", form: str = "UTF-8 text") -> str:
    """The text of ``path``; one line naming it when it is missing, unreadable or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: byte {error.start} is not UTF-8 ({what}s are {form})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read this {what}: {error.strerror}") from None


def read_yaml(path: str | Path, what: str = "file") -> object:
    """The data of a YAML file; one ``ValueError`` line naming ``path`` when it cannot be read."""
    path = Path(path)
    text = read_utf8(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}:{where}: not valid YAML: {problem}") from None


def non_finite(value, where: tuple = ()) -> tuple | None:
    """The key path of the first NaN or infinite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite(item, (*where, key))
        if found is not None:
            return found
    return None


def key_path(where) -> str:
    """``("variants", "base", "lr")`` -> ``variants.base.lr`` (the top level when empty)."""
    return ".".join(str(k) for k in where) or "the top level"


def check_schema(data, schema: dict, path: str | Path) -> None:
    """``data`` (read from ``path``) fits ``schema`` and holds no NaN or infinite number; else one
    ``ValueError`` line naming the file, the key and what is allowed."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        hint = SCHEMA_HINTS.get(id(schema), "")
        if error.validator in ("anyOf", "oneOf"):  # "is not valid under any of the given schemas": the hint says more
            message = "not what is allowed here"
        else:
            message = error.message if len(error.message) < 160 else error.message[:157] + "..."
        raise ValueError(f"{path}: {key_path(error.absolute_path)}: {message}" + (f" ({hint})" if hint else ""))
    bad = non_finite(data)
    if bad is not None:
        raise ValueError(f"{path}: {key_path(bad)}: {_at(data, bad)!r} is not a finite number")


def _at(data, where: tuple):
    for key in where:
        data = data[key]
    return data


def read_checked_yaml(path: str | Path, schema: dict, what: str) -> dict:
    """A YAML file of one of the kinds above, read and checked (an empty file reads as ``{}``)."""
    data = read_yaml(path, what)
    data = {} if data is None else data
    check_schema(data, schema, path)
    return data


def read_text_lines(path: str | Path, what: str = "prompt file") -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped; one line naming the file when it is
    missing, not UTF-8, or has no non-empty line."""
    path = Path(path)
    text = read_utf8(path, what, "UTF-8 text, one prompt a line")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: an empty {what} (one prompt a line)")
    return lines


def check_json_file(path: str | Path, what: str) -> None:
    """``path`` is a readable JSON file (parsed, then dropped): a truncated annotation file fails
    here, in one line, instead of in a kernel."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the {what} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                         f"a truncated download?") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the {what} is not UTF-8 JSON") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the {what}: {error.strerror}") from None


def check_safetensors(path: str | Path, what: str) -> None:
    """``path`` is a whole safetensors file (its header read, each tensor's bytes within the file):
    a truncated, empty or foreign file is one ``ValueError`` line naming it and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} here (a safetensors file)")
    try:
        with safe_open(str(path), "np") as handle:
            for name in list(handle.keys())[-1:]:  # the last tensor ends the file: a truncated file fails here
                handle.get_slice(name)[...]
    except (SafetensorError, OSError, ValueError, MemoryError) as error:
        reason = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a whole safetensors file ({what}): {reason}; run again the step that writes it") from None


def check_json_object(path: str | Path, what: str) -> dict:
    """The JSON object in ``path``; one ``ValueError`` line naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} here")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the {what} is not valid JSON ({error}); run again the step that writes it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the {what} is not a JSON object")
    return data
