"""Flags generated from the settings' declarations (ddpm.train.settings): one flag for each
setting of a config dataclass, in its group, with the setting's help and default, and its rule
as the flag's type (so that `--steps 0` is refused as the config would refuse steps=0)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Collection
from typing import Any

from ddpm.cli.args import float_list
from ddpm.errors import ConfigError, DataError
from ddpm.train.settings import Group, Rule, Setting, settings_of


def flag_type(rule: Rule) -> Callable[[str], Any]:
    """An argparse type for `rule`: the value, or ArgumentTypeError saying what was expected
    (`ddpm train: error: argument --steps: expected a positive integer, got '0'`)."""
    if rule.item is not None:
        return float_list(flag_type(rule.item))
    if rule.ok is None and rule.kind in (int, float, str):
        return rule.kind

    def parse(text: str) -> Any:
        try:
            value = rule.kind(text)
        except (ConfigError, DataError) as e:  # a check that says what is wrong itself
            raise argparse.ArgumentTypeError(str(e)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rule.expected}, got {text!r}") from None
        bad = isinstance(value, float) and not math.isfinite(value)
        if bad or (rule.ok is not None and not rule.ok(value)):
            raise argparse.ArgumentTypeError(f"expected {rule.expected}, got {text!r}")
        return value

    return parse


def add_flag(g: Any, name: str, s: Setting, default: Any) -> None:
    """The flag of setting `name` (--name-with-dashes unless it names its own) in group `g`."""
    kw: dict[str, Any] = {"dest": name, "default": default, "help": s.help}
    rule = s.flag_rule or s.rule
    if s.switch == "store_true":
        kw["action"] = "store_true"
    elif s.switch == "both":
        kw["action"] = argparse.BooleanOptionalAction
    elif rule is not None and rule.choices is not None:
        kw["choices"] = tuple(rule.choices)  # as they are now
        if rule.kind is not str:
            kw["type"] = rule.kind
    elif rule is not None:
        kw["type"] = flag_type(rule)
    g.add_argument(s.flag or f"--{name.replace('_', '-')}", *s.aliases, **kw)


def flag_group(p: argparse.ArgumentParser, group: Group) -> Any:
    """The argument group titled as `group`, created (with its description) on first use."""
    for g in p._action_groups:
        if g.title == group.title:
            return g
    return p.add_argument_group(group.title, group.description)


def add_setting_flags(
    p: argparse.ArgumentParser,
    config: type,
    only: Collection[Group] | None = None,
    skip: Collection[Group] = (),
    before: dict[str, Callable[[Any], None]] | None = None,
    instead: dict[str, Callable[[Any, Any], None]] | None = None,
) -> None:
    """A flag for each setting of dataclass `config` that has one, in the order declared (the
    groups of `only` alone, if given; none of `skip`'s). `before[name](group)` adds flags that
    are no settings just before the flag of `name`; `instead[name](group, default)` adds a flag
    shared with other commands in place of the generated one."""
    before, instead = before or {}, instead or {}
    for name, (f, s) in settings_of(config).items():
        if s.group.title is None or s.group in skip or (only is not None and s.group not in only):
            continue
        g = flag_group(p, s.group)
        if name in before:
            before[name](g)
        if name in instead:
            instead[name](g, f.default)
        else:
            add_flag(g, name, s, f.default)
