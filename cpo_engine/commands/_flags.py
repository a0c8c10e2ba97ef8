"""Flags generated from the config dataclasses (as vLLM's ``EngineArgs`` does): a flag names one config
key, and its type, choices, help and the default it shows are read from that key's dataclass field, so
a knob's name, default and documentation live in one place (the dataclass in its room).

A field's help is ``field(metadata={"help": ...})`` when given, else its attribute docstring (the string
literal under the field, the one documentation of every config key); its fixed choices are
``metadata={"choices": (...)}`` (or a function returning them, for a registry's names).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from typing import Any, Callable

from cpo_engine.exceptions import ConfigError


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One ``section.key`` of a config class: the field, the dataclass that declares it, its type and the
    default it takes in the command's config (a nested default may differ from the section's own)."""

    key: str
    owner: type
    field: dataclasses.Field
    type: Any
    default: Any

    @property
    def help(self) -> str:
        text = self.field.metadata.get("help") or field_docs(self.owner).get(self.field.name, "")
        return _plain(" ".join(text.split()))

    @property
    def choices(self) -> list[Any] | None:
        choices = self.field.metadata.get("choices")
        if callable(choices):
            choices = choices()
        return list(choices) if choices is not None else None


def _plain(text: str) -> str:
    """reST markup as a terminal shows it: ``x`` -> x, :func:`~a.b.f` -> f."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", text)
    return text.replace("``", "")


def _numpydoc_attributes(doc: str | None) -> dict[str, str]:
    """``name : type`` entries of a numpydoc ``Attributes``/``Parameters`` section -> their description."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    section, name = False, None
    for prev, line in zip([""] + lines, lines):
        if set(line.strip()) == {"-"} and prev.strip() in ("Attributes", "Parameters"):
            section, name = True, None
            continue
        if not section:
            continue
        m = re.match(r"^(\w+) : ", line)
        if m:
            name = m.group(1)
            out[name] = ""
        elif name and line.startswith((" ", "\t")):
            out[name] = (out[name] + " " + line.strip()).strip()
        elif line.strip() and not line.startswith((" ", "\t")):  # an unindented line that is no entry: next section
            section, name = False, None
    return out


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its bases: ``{field: the string literal under it}`` (or, for a
    class that documents its fields numpydoc-style, its ``Attributes`` section)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        docs.update(_numpydoc_attributes(klass.__doc__))
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a class made at run time)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> X; any other type unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


@functools.lru_cache(maxsize=None)
def _default(cls: type) -> Any:
    """``cls()``, built once per class (only read: the defaults a command shows)."""
    return cls()


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_key(cls: type, key: str) -> ConfigKey:
    """Resolve ``section.key`` in the config dataclass ``cls``; a key that names no field is a ConfigError
    naming the class, the key and the fields there are."""
    owner, value = cls, _default(cls)
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if part not in fields:
            raise ConfigError(f"{cls.__name__} has no config key '{key}' ({owner.__name__} has "
                              f"{', '.join(sorted(fields))})")
        tp = _hints(owner)[part]
        value = getattr(value, part) if value is not None else None
        if i == len(parts) - 1:
            return ConfigKey(key, owner, fields[part], tp, value)
        section = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(section):
            raise ConfigError(f"{cls.__name__}: '{'.'.join(parts[:i + 1])}' is not a section, so '{key}' names no key")
        owner = section
        value = value if value is not None else _default(section)  # an unset section (generation: null)
    raise AssertionError("unreachable")


def show(value: Any) -> str:
    """A default as the --set syntax writes it."""
    if isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value):
        return type(value).__name__
    return json.dumps(value)


def flag_help(ck: ConfigKey, const: Any = None, has_const: bool = False, choices: list[Any] | None = None) -> str:
    """The help of a flag (argparse's ``%`` escaped): the field's help, the registry's line per choice when the
    field names one (``metadata={"describe": f}``, f(choices) -> text), the default the command starts from
    and the --set key."""
    if not ck.help:
        raise ConfigError(f"{ck.owner.__name__}.{ck.field.name} has no documentation: add a docstring under the field "
                          "(or field(metadata={'help': ...})); a flag's help is read from it")
    tail = f"--set {ck.key}={show(const)}" if has_const else f"--set {ck.key}"
    describe = ck.field.metadata.get("describe")
    extra = f" {describe(tuple(choices) if choices is not None else None)}" if describe else ""  # already %-escaped
    return f"{ck.help.replace('%', '%%')}{extra} (default: {show(ck.default)}) [{tail}]"


def _arg_type(ck: ConfigKey) -> Callable[[str], Any] | None:
    tp = _unwrap_optional(ck.type)
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is list and typing.get_args(tp) in ((str,), (int,), (float,)):
        return typing.get_args(tp)[0]
    raise ConfigError(f"flag for {ck.key}: its type {tp} has no command-line parser; pass type= to flag()")


def add_flag(parser: argparse.ArgumentParser, cls: type, key: str, name: str | None = None, **kwargs: Any) -> str:
    """Add the flag of ``key`` (default name ``--<last part of the key>``) to ``parser``; returns its dest.
    Its type, choices, help and shown default come from the field; ``kwargs`` may only narrow them for one
    command (``type=`` for a union field, a subset of ``choices``, ``action="store_const", const=`` for an
    on/off flag, ``action="append"`` for a list)."""
    ck = config_key(cls, key)
    name = name or "--" + key.rpartition(".")[2].replace("_", "-")
    if "help" in kwargs or "default" in kwargs:
        raise ConfigError(f"flag {name}: help and default come from {ck.owner.__name__}.{ck.field.name}, not the command")
    if _unwrap_optional(ck.type) is bool and "action" not in kwargs:
        kwargs.update(action="store_const", const=True)
    if kwargs.get("action") == "store_const":
        help_text = flag_help(ck, kwargs["const"], has_const=True)
    else:
        if "type" not in kwargs:
            kwargs["type"] = _arg_type(ck)
        field_choices = ck.choices
        if field_choices is not None:
            narrowed = kwargs.get("choices")
            if narrowed is not None and not set(narrowed) <= set(field_choices):
                raise ConfigError(f"flag {name}: choices {narrowed} are not among {ck.key}'s {field_choices}")
            kwargs["choices"] = narrowed if narrowed is not None else field_choices
        help_text = flag_help(ck, choices=kwargs.get("choices"))
    action = parser.add_argument(name, default=None, help=help_text, **kwargs)
    return action.dest
