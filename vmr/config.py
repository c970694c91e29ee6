"""Typed configuration: dataclasses with defaults, layered from YAML files and ``key.sub=value`` overrides.

Every component defines its own dataclass next to its code (``MATRConfig`` in ``vmr.models.matr``, ...); workflows
compose them. :func:`resolve` builds one from defaults, then each YAML file in order, then the overrides, checks types,
and the result is logged with the run (:func:`to_dict`). Unknown keys are errors, so a typo never passes silently.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Iterable, TypeVar

import yaml

from vmr.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A plain nested dict of a config dataclass (tuples become lists)."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        seq = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) dict; missing keys keep their defaults, unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}.{f.name}" if where else f.name)
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(overrides: Iterable[str]) -> dict:
    """``["train.epochs=3", "model.gamma=0.1"]`` -> a nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_yaml(path: str) -> dict:
    from vmr import storage

    try:
        data = yaml.safe_load(storage.read_text(path)) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def resolve(cls: type[T], files: Iterable[str] = (), overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, then each YAML file, then ``key=value`` overrides."""
    data: dict = {}
    for f in files:
        data = merge(data, load_yaml(f))
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


# a key that names a secret (its value is replaced), and the password of a ``scheme://user:password@host`` URI
SECRET_KEY = re.compile(r"(password|passwd|secret|token|credential|access_key|api_key|private_key)", re.I)
_URI_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]+:)(?P<pw>[^@/\s]+)@")


def redact(value: Any) -> Any:
    """A value with the password of any ``scheme://user:password@host`` URI in it replaced by ``***`` (strings;
    anything else as it is)."""
    if isinstance(value, str):
        return _URI_PASSWORD.sub(lambda m: m.group("pre") + "***@", value)
    return value


def redact_config(d: Any) -> Any:
    """A nested config dict (or list) with secrets replaced by ``***``: the values of keys that name one
    (:data:`SECRET_KEY`, unless empty) and the passwords in URIs."""
    if isinstance(d, dict):
        return {k: "***" if isinstance(k, str) and SECRET_KEY.search(k) and d[k] not in (None, "")
                else redact_config(v) for k, v in d.items()}
    if isinstance(d, list):
        return [redact_config(v) for v in d]
    return redact(d)


def dump_yaml(cfg: Any) -> str:
    """The YAML of a config dataclass or dict, secrets redacted (:func:`redact_config`): the one form in which a
    config is written to a file, logged to MLflow or printed."""
    return yaml.safe_dump(redact_config(to_dict(cfg)), sort_keys=False)
