"""Typed settings, the same way for every stage: a dataclass, loaded from YAML, ``--set key=value`` and flags.

A stage's settings are a dataclass deriving from :class:`Config`; nested dataclasses are sections
(``lora.r``, ``teacher.url``). Precedence: the dataclass's defaults < the YAML file < ``--set`` overrides
< values the command line gives as flags. Every value is checked against its field's type where it comes
in, so an error names the file or the override it came from; the dataclass's ``__post_init__`` validates
what types cannot say, raising :class:`ConfigError`. ``save`` writes the resolved settings as YAML, which
``from_yaml`` reads back into an equal config.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from facellm.errors import FacellmError


class ConfigError(FacellmError, ValueError):
    pass


class Config:
    """Loading, overriding and saving for a dataclass of settings (derive the dataclass from this).

    Subclasses may declare, as plain class attributes:

    - ``RENAMED``: old key -> its new dotted key; an old key is refused with a message naming the new one.
    - ``EXCLUSIVE``: pairs of keys that are alternatives (``max_steps`` or ``epochs``): a YAML file that
      sets both (not null) is refused; an override of one drops the other where the file set it.
    """

    RENAMED: ClassVar[Mapping[str, str]] = {}
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: Iterable[str] = (),
                  values: Mapping[str, Any] | None = None):
        """The settings of the YAML file at ``path`` (None: the defaults), then ``overrides`` (``key=value``,
        the value read as YAML), then ``values`` (key -> value, e.g. the flags given): a later one wins. Keys
        are dotted into sections (``lora.r=8``) and into mapping fields (``columns.image=img``)."""
        import yaml  # here, not at the top: `facellm --help` imports this module and should start fast

        from facellm.yamlfile import load_mapping

        raw: dict = {}
        if path is not None:
            raw = _checked(cls, load_mapping(path, ConfigError), f"{path}: ")
            for pair in cls.EXCLUSIVE:
                if all(raw.get(key) is not None for key in pair):
                    raise ConfigError(f"{path}: set {' or '.join(pair)}, not both")
        given: set[str] = set()
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r}: expected key=value (e.g. seed=1 or lora.r=8)")
            _override(cls, raw, given, key.strip(), yaml.safe_load(text), f"--set {item}: ")
        for key, value in (values or {}).items():
            _override(cls, raw, given, key, value, "")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping):
        """The config these settings describe (a nested mapping, as ``to_dict`` writes it)."""
        return _build(cls, _checked(cls, raw, ""))

    @classmethod
    def defaults(cls) -> dict:
        """The default settings, as ``to_dict`` writes them, without building (nor validating) an instance."""
        return _plain({f.name: dataclasses.asdict(v) if dataclasses.is_dataclass(v := _default(f)) else v
                       for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        """The settings as plain YAML/JSON data: sections as mappings, tuples as lists."""
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> Path:
        """Write the settings as YAML to ``path``, atomically (a reader never sees half a file)."""
        import yaml

        from facellm.atomic import write_text_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        return path


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _leaf_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for name, kind in _field_types(cls).items():
        keys += _leaf_keys(kind, f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else [prefix + name]
    return keys


def _field(cls, name: str, prefix: str, where: str):
    """The type of field ``name`` of ``cls``; ConfigError naming the valid keys (or the new key) if none."""
    types_ = _field_types(cls)
    if name in types_:
        return types_[name]
    key = prefix + name
    renamed = getattr(cls, "RENAMED", {})
    if key in renamed:
        raise ConfigError(f"{where}setting {key!r} is now {renamed[key]!r}")
    raise ConfigError(f"{where}unknown setting {key!r}; known: {', '.join(_leaf_keys(cls, prefix))}")


def _checked(cls, raw: Mapping, where: str, prefix: str = "") -> dict:
    """``raw`` with every key known to ``cls`` and every value of its field's type (sections stay mappings)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}{prefix.rstrip('.')}: expected a mapping of "
                          f"{', '.join(_leaf_keys(cls, prefix))}; got {raw!r}")
    return {name: _coerce(_field(cls, str(name), prefix, where), value, f"{prefix}{name}", where)
            for name, value in raw.items()}


def _override(cls, raw: dict, given: set[str], key: str, value, where: str) -> None:
    """Set dotted ``key`` in ``raw`` to ``value`` (type-checked), dropping its alternative set by the file."""
    *parents, leaf = key.split(".")
    target, owner, prefix = raw, cls, ""
    for i, name in enumerate(parents):
        kind = _field(owner, name, prefix, where)
        prefix += f"{name}."
        if dataclasses.is_dataclass(kind):
            target, owner = target.setdefault(name, {}), kind
        elif typing.get_origin(kind) is dict and i == len(parents) - 1:  # columns.image=img
            value_type = typing.get_args(kind)[1]
            target.setdefault(name, {})[leaf] = _coerce(value_type, value, key, where)
            return
        else:
            raise ConfigError(f"{where}{prefix.rstrip('.')} has no settings of its own (such as {key!r})")
    target[leaf] = _coerce(_field(owner, leaf, prefix, where), value, key, where)
    for pair in owner.EXCLUSIVE if owner is cls else ():
        if leaf in pair:
            other = next(k for k in pair if k != leaf)
            if other in given:
                raise ConfigError(f"{where}set {' or '.join(pair)}, not both")
            target.pop(other, None)
    given.add(key)


def _coerce(kind, value, key: str, where: str):
    """``value`` as field type ``kind``, or ConfigError naming ``key``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _coerce(kind, value, key, where)
    if dataclasses.is_dataclass(kind):
        return _checked(kind, value, where, f"{key}.")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}{key} {value!r}: expected a mapping, e.g. {{name: value}}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if origin in (list, tuple):
        return _sequence(origin, args, value, key, where)
    return _scalar(kind, value, key, where)


def _sequence(origin, args, value, key: str, where: str):
    if isinstance(value, str) and args[0] is str:  # a comma list, as flags spell it: attributes,cues
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}{key} {value!r}: expected a list")
    if origin is tuple and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where}{key} {value!r}: expected {len(args)} values")
        return tuple(_coerce(a, v, key, where) for a, v in zip(args, value))
    items = [_coerce(args[0], v, key, where) for v in value]
    return tuple(items) if origin is tuple else items


def _scalar(kind, value, key: str, where: str):
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}{key} {value!r}: expected true or false")
    if kind in (int, float):
        return _number(kind, value, key, where)
    if kind is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/yes (off/on) as a boolean: `mixed_precision: no`
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(f"{where}{key} {value!r}: expected text")
    return value


def _number(kind, value, key: str, where: str):
    if isinstance(value, int) and not isinstance(value, bool):
        return kind(value)
    try:  # YAML 1.1 reads "2e-3" (no dot) as text: a number in text is still a number
        number = float(value) if isinstance(value, (str, float)) else None
    except ValueError:
        number = None
    if number is None or (kind is int and not number.is_integer()):
        raise ConfigError(f"{where}{key} {value!r}: expected {'an integer' if kind is int else 'a number'}")
    return kind(number)


def _build(cls, raw: dict):
    """An instance of dataclass ``cls`` from checked settings; absent ones keep their defaults."""
    kwargs = {}
    for name, value in raw.items():
        kind = _field_types(cls)[name]
        kwargs[name] = _build(kind, value) if dataclasses.is_dataclass(kind) else value
    return cls(**kwargs)
