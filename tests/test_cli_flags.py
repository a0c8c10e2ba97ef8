"""CLI flags are generated from the config dataclasses (as vLLM's EngineArgs): every flag of every subcommand
names a key of that command's config class, and its help, type, choices and shown default are read from the
field, so a knob's name, default and documentation live in one place."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from cpo_engine import settings
from cpo_engine.cli import build_parser
from cpo_engine.commands import config_from_args, flag, use_config
from cpo_engine.commands._flags import field_docs, show
from cpo_engine.exceptions import ConfigError
from cpo_engine.generation import GenerateConfig
from cpo_engine.search.config import SelectionConfig

COMMANDS = Path(__file__).resolve().parents[1] / "cpo_engine" / "commands"
#: each subcommand -> its config class
CONFIGS = {"run": settings.RunConfig, "fit": settings.FitConfig, "embed": settings.EmbedJobConfig,
           "evaluate": settings.EvaluateConfig, "ope": settings.OffPolicyConfig, "optimize": settings.OptimizeConfig,
           "assign": settings.AssignConfig, "verify": settings.VerifyJobConfig, "nightly": settings.NightlyConfig,
           "loop": settings.LoopConfig, "generate": GenerateConfig, "edits": settings.EditsJobConfig}
#: options that are not a config key: the config plumbing, the console, and what a command does with its config
NOT_CONFIG = {"-h", "--help", "--config", "--set", "--log-level", "-q", "--quiet", "--dry-run", "--json"}
#: subcommands with no config class (their flags are the command's own, checked by their tests)
NO_CONFIG = {"validate"}


@pytest.fixture(scope="module")
def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _field(cls: type, key: str) -> tuple[dataclasses.Field, typing.Any, typing.Any, type]:
    """(field, its type, the default it has in ``cls()``, the dataclass declaring it), walked here on its own."""
    value, owner = cls(), cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        assert part in fields, f"{cls.__name__} has no key {key}"
        hint = typing.get_type_hints(owner)[part]
        value = getattr(value, part) if value is not None else None
        if i == len(parts) - 1:
            return fields[part], hint, value, owner
        owner = next(a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a))
        value = value if value is not None else owner()
    raise AssertionError


def _flags(sub: argparse.ArgumentParser) -> dict[str, tuple[argparse.Action, str]]:
    keys = sub.get_default("_cpo_flag_keys") or {}
    return {s: (a, keys[a.dest]) for a in sub._actions if a.dest in keys for s in a.option_strings}


def test_every_subcommand_flag_is_a_key_of_its_config(subcommands):
    assert set(subcommands) == set(CONFIGS) | NO_CONFIG
    for name, cls in CONFIGS.items():
        sub = subcommands[name]
        assert sub.get_default("_cpo_config") is cls, name
        flags = _flags(sub)
        options = {s for a in sub._actions for s in a.option_strings}
        assert options - set(flags) <= NOT_CONFIG, f"cpo {name}: flags that are no config key: {options - set(flags) - NOT_CONFIG}"
        for option, (action, key) in flags.items():
            fld, hint, default, owner = _field(cls, key)
            help_text = " ".join(action.help.replace("%%", "%").split())
            doc = " ".join((fld.metadata.get("help") or field_docs(owner)[fld.name]).split())
            assert doc and help_text.startswith(doc.replace("``", "").split(":")[0][:30]), (name, option, help_text)
            assert f"(default: {show(default)})" in help_text, (name, option, help_text)
            tail = f"[--set {key}={show(action.const)}]" if action.const is not None else f"[--set {key}]"
            assert help_text.endswith(tail), (name, option, help_text)
            assert action.default is None  # unset, a flag leaves the config alone
            if action.type in (int, float):
                assert action.type in (hint, *typing.get_args(hint)), (name, option, hint)
            choices = fld.metadata.get("choices")
            if choices is not None:
                allowed = choices() if callable(choices) else choices
                assert action.choices is not None and set(action.choices) <= set(allowed), (name, option)


def test_help_shows_the_default_of_the_commands_own_config(subcommands):
    """The shown default is the one the command starts from: `cpo loop` verifies with 16 tokens, `cpo run` with 32;
    both read the same field's help."""
    def help_of(name: str, option: str) -> str:
        return " ".join(_flags(subcommands[name])[option][0].help.split())

    assert settings.LoopConfig().verify.max_tokens == 16 and settings.RunConfig().verify.max_tokens == 32
    assert "(default: 16) [--set verify.max_tokens]" in help_of("loop", "--max-tokens")
    assert "(default: 32) [--set verify.max_tokens]" in help_of("run", "--verify-max-tokens")
    assert help_of("run", "--z").startswith("Selection by lower confidence bound")
    assert f"(default: {SelectionConfig().z:g})" in help_of("nightly", "--z")


def test_a_changed_default_or_docstring_changes_the_help():
    """Change a default in the dataclass (here a subclass) and --help shows the new one; the help is the docstring."""
    @dataclasses.dataclass
    class Changed(settings.RunConfig):
        seed: int = 7
        """Seven, to see it in the help."""
        selection: SelectionConfig = dataclasses.field(default_factory=lambda: SelectionConfig(z=2.5))

    def help_text(cls: type, key: str) -> str:
        p = argparse.ArgumentParser()
        use_config(p, cls)
        flag(p, key)
        return " ".join(p._actions[-1].help.split())

    assert help_text(Changed, "seed") == "Seven, to see it in the help. (default: 7) [--set seed]"
    assert "(default: 2.5) [--set selection.z]" in help_text(Changed, "selection.z")
    assert "(default: 1.645) [--set selection.z]" in help_text(settings.RunConfig, "selection.z")
    assert "(default: 0) [--set seed]" in help_text(settings.RunConfig, "seed")


def test_flags_parse_into_the_config_and_unset_flags_leave_it_alone(subcommands, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("selection: {z: 0.5}\nbeam: {rounds: 2}\n")
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["run", "--config", str(cfg_file), "--rounds", "4"]))
    assert isinstance(cfg, settings.RunConfig)
    assert cfg.selection.z == 0.5 and cfg.beam.rounds == 4  # the file's z stays, the flag wins on rounds
    cfg = config_from_args(parser.parse_args(["evaluate", "--no-ope", "--forest"]))
    assert cfg.evaluation.ope is False and cfg.evaluation.with_forest is True
    gen = config_from_args(parser.parse_args(["generate", "--design", "random_k", "--k", "2", "--overwrite"]))
    assert gen.design.kind == "random_k" and gen.design.k == 2 and gen.overwrite is True and gen.retry_errors is False
    with pytest.raises(SystemExit):  # the field's choices
        parser.parse_args(["run", "--trust-region", "sometimes"])


def test_a_flag_of_no_key_or_an_undocumented_field_fails_when_the_parser_is_built():
    p = argparse.ArgumentParser()
    use_config(p, settings.RunConfig)
    with pytest.raises(ConfigError, match="no config key 'selection.zz'.*simultaneous"):
        flag(p, "selection.zz")
    with pytest.raises(ConfigError, match="help and default come from"):
        flag(p, "seed", help="my own words")

    @dataclasses.dataclass
    class Bare:
        n: int = 1

    q = argparse.ArgumentParser()
    use_config(q, Bare)
    with pytest.raises(ConfigError, match="Bare.n has no documentation"):
        flag(q, "n")


def test_commands_write_no_help_or_default_of_a_config_key():
    """No default literal or help string is repeated in commands/: a flag() call names only its key (and, for a
    few, a short name, a narrowed type or choices, a metavar, or the constant an on/off flag sets)."""
    bad = []
    for f in sorted(COMMANDS.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "flag":
                kws = {k.arg for k in node.keywords}
                if len(node.args) != 2 or kws - {"name", "type", "choices", "action", "const", "metavar"}:
                    bad.append(f"{f.name}:{node.lineno}")
    assert not bad, f"flag() calls with their own help or default: {bad}"
