"""Typed dataclasses from YAML mappings: every value checked against its field's type hint, every error naming
where the value came from. Written by hand because the config needs that error message (file or command line
override, key, valid choices), which neither dataclasses nor PyYAML gives."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot describe a valid run."""


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(item: str, root: type) -> tuple[str, Any]:
    """`section.key=value` checked against the config's fields, the value read as YAML."""
    key, sep, value = item.partition("=")
    where = f"command line override {item!r}"
    if not sep:
        raise ConfigError(f"{where} is not of the form section.key=value")
    key = key.strip()
    cls = root
    for depth, part in enumerate(parts := key.split(".")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            valid = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"{where}: unknown config key '{key}'; valid keys of {valid}: {sorted(fields)}")
        default = getattr(cls(), part)
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(default) == last:
            raise ConfigError(f"{where}: '{key}' is " + ("a section, not a key" if last else "not a section"))
        cls = type(default)
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: {value!r} is not a valid value") from None


def build(cls, raw: dict[str, Any], source: str, prefix: str, origins: dict[str, str]):
    """Dataclass `cls` from `raw`, sections built in turn; an error names `origins[key]` (an override) or `source`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key '{prefix}{unknown[0]}'; valid keys of "
            f"{prefix.rstrip('.') or 'the top level'}: {sorted(fields)}"
        )
    kwargs = {}
    defaults = cls()
    for name, value in raw.items():
        default = getattr(defaults, name)
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a mapping")
            kwargs[name] = build(type(default), value, source, prefix=f"{key}.", origins=origins)
        else:
            kwargs[name] = _coerce(value, str(fields[name].type), f"{origins.get(key, source)}: {key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: str, where: str) -> Any:
    """Check a value against the field's type hint (`int`, `float | None`, `tuple[int, ...]`, ...)."""
    if value is None:
        if hint.endswith("| None"):
            return None
        raise ConfigError(f"{where} may not be null")
    base = hint.removesuffix(" | None")
    if base.startswith("dict["):  # dict[str, float]: names -> weights
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} must be a mapping, e.g. {{unc: 1, gref: 0.5}}")
        return {str(k): _coerce(v, "float", f"{where}.{k}") for k, v in value.items()}
    if base.startswith("tuple["):
        item = base[len("tuple[") :].split(",")[0].strip()
        values = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(v, item, where) for v in values)
    if base == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where}={value!r} must be true or false")
    if base == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}={value!r} must be an integer")
    if base == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} must be a number")
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{where}={value!r} must be a number") from None
    if base == "str" and not isinstance(value, str):
        raise ConfigError(f"{where}={value!r} must be a string")
    return value
