"""Typed settings: frozen dataclasses hold the defaults, YAML files and `key=value` overrides change them.

Shared by `colorizer.config` and `crawler.curation.config`; needs only PyYAML (no torch). Unknown keys
and values of the wrong type raise `ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and what to do."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return build(tp, value, key + ".")
    if origin is Literal:
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads off/no/false (on/yes/true) as booleans: `train.amp=off` means the choice "off"
            spelled = ("off", "no", "false") if not value else ("on", "yes", "true")
            value = next((a for a in args if a in spelled), value)
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return coerce(key, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} fits none of {_type_name(tp)}")
    if origin is tuple:
        if isinstance(value, str):
            raise ConfigError(f"{key}: expected a list like [a, b], got the string {value!r}")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {coerce(f"{key} key", k, args[0]): coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    f = float(value.replace("_", ""))
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected text, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # a bug in the dataclass


def build(cls: type, values: dict, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from `values` (missing keys keep their defaults)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names, key=str)
    if unknown:
        key = prefix + str(unknown[0])
        close = [n for n in names if n.lower() == str(unknown[0]).lower().replace("-", "_")]
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; known keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = coerce(prefix + f.name, values[f.name], hints[f.name])
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts/lists (JSON/YAML-safe, no tuples)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def deep_merge(base: dict, update: dict) -> dict:
    """`update` over `base`: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """`"optim.lr_G=1e-4"` -> `{"optim": {"lr_G": 1e-4}}` (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.lr_G=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse {raw!r}: {e}") from None
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping of settings in a YAML file ({} for an empty file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; the shipped ones are in configs/")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of settings at the top level")
    return loaded


def load(cls: type, path: str | os.PathLike | None = None, overrides: typing.Iterable[str] = ()) -> Any:
    """Defaults of `cls` <- YAML file at `path` <- `key=value` overrides, type-checked."""
    values = read_yaml(path) if path is not None else {}
    for text in overrides:
        values = deep_merge(values, parse_override(text))
    return build(cls, values)


def save(cfg: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
