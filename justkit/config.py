"""YAML configs with command-line overrides, and dataclass construction from dicts."""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml
from justkit.errors import JustkitError
from justkit.fileio import atomic_write_text

T = TypeVar("T")


class ConfigError(JustkitError, ValueError):
    """A config file or override is malformed; the message names the file and key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so a second ``storage:`` or ``w_u:`` line would quietly win over the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (line {first.start_mark.line + 1} and line "
                    f"{key_node.start_mark.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path, _including: tuple = ()) -> dict:
    """Load a YAML mapping; an ``include:`` list of paths (relative to the file) is merged first."""
    path = Path(path)
    key = path.resolve()
    if key in _including:
        chain = " -> ".join(str(p) for p in (*_including, key))
        raise ConfigError(f"{path}: includes itself ({chain})")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        if not isinstance(inc, str):
            raise ConfigError(f"{path}: include: expects file names, got {inc!r}")
        merged = deep_merge(merged, load_yaml(path.parent / inc, (*_including, key)))
    return deep_merge(merged, data)


def load_section(path: str | Path | None, section: str, overrides: Sequence[str] = ()) -> dict:
    """The ``section:`` mapping of the YAML file ``path`` (None: empty) with ``--section.key value``
    ``overrides`` applied. Every justkit config file has this shape: one mapping per section
    (``fbank:``, ``tokenizer:``, ``decode:``; experiments have ``model:``, ``data:``, ``train:``)."""
    raw = load_yaml(path) if path else {}
    if path and section not in raw:
        raise ConfigError(f"{path}: no '{section}:' section (keys: {sorted(raw)}); justkit configs "
                          f"hold their options under '{section}:'")
    other = sorted(set(raw) - {section})
    if other:
        raise ConfigError(f"{path}: unknown top-level key(s) {other}; this file holds '{section}:' only")
    return apply_overrides({section: raw.get(section) or {}}, overrides)[section]


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """Return a copy of ``base`` with ``over`` merged in recursively (``over`` wins)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` (or ``--key.sub value`` pairs) overrides; values parse as YAML.

    >>> apply_overrides({"model": {"d": 1}}, ["model.d=4"])
    {'model': {'d': 4}}
    """
    cfg = copy.deepcopy(cfg)
    items: list[tuple[str, str]] = []
    it = iter(overrides)
    for tok in it:
        if tok.startswith("--"):
            tok = tok[2:]
            if "=" not in tok:
                try:
                    val = next(it)
                except StopIteration:
                    raise ConfigError(f"override --{tok} has no value") from None
                items.append((tok, val))
                continue
        if "=" not in tok:
            raise ConfigError(f"override {tok!r} is not of the form key.sub=value")
        k, v = tok.split("=", 1)
        items.append((k, v))
    for key, raw in items:
        try:
            val = yaml.safe_load(raw)
        except yaml.YAMLError:
            val = raw
        node = cfg
        parts = key.replace("-", "_").split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = val
    return cfg


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise a ConfigError naming them.

    Nested dataclass fields are built recursively from nested mappings.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, val in data.items():
        typ = hints.get(name)
        key = f"{where or cls.__name__}.{name}"
        if dataclasses.is_dataclass(typ):
            if not isinstance(val, (Mapping, typ)):
                raise ConfigError(f"{key}: expected a mapping of {typ.__name__} keys, got {val!r}")
            if isinstance(val, Mapping):
                val = from_dict(typ, val, key)
        elif typ in (int, float):
            val = _number(val, typ, key)
        elif typ is bool and not isinstance(val, bool):
            raise ConfigError(f"{key}: expected true or false, got {val!r}")
        elif typ is str and not isinstance(val, str):
            raise ConfigError(f"{key}: expected a string, got {val!r}")
        kwargs[name] = val
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a dataclass's own checks (__post_init__)
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) or not where else f"{where}: {msg}") from None


def _number(val: Any, typ: type, key: str) -> int | float:
    """An int/float field's value; strings are parsed, since YAML 1.1 reads ``3e-3`` as a string."""
    if isinstance(val, bool) or not isinstance(val, (int, float, str)):
        raise ConfigError(f"{key}: expected {'an integer' if typ is int else 'a number'}, got {val!r}")
    try:
        num = float(val)
        if typ is int:
            if not num.is_integer():
                raise ValueError
            return int(num)
        return num
    except ValueError:
        raise ConfigError(f"{key}: expected {'an integer' if typ is int else 'a number'}, got {val!r}") from None


def to_dict(obj: Any) -> dict:
    """Dataclass -> plain dict (for YAML dumps and checkpoints)."""
    return dataclasses.asdict(obj)


def dump_yaml_str(cfg: Mapping) -> str:
    """``cfg`` as the YAML text :func:`dump_yaml` writes."""
    return yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True)


def dump_yaml(cfg: Mapping, path: str | Path) -> None:
    """Write ``cfg`` as YAML atomically."""
    atomic_write_text(path, dump_yaml_str(cfg))
