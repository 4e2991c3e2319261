"""A training setting, declared once: its default, what it does (the help of its flag), the
group its flag sits in, the rule its value follows, and whether `--resume` may change it.
`TrainConfig` (ddpm.train.config) declares each field with a `Group`; `check_settings` applies
the rules when a config is built, and `ddpm train`'s flags are generated from the same
declarations (ddpm.cli.flags)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ddpm.data.images import parse_size
from ddpm.errors import ConfigError
from ddpm.io.paths import check_output_folder
from ddpm.train.distributed import world_from_env

# the power-function EMA's σ_rel at γ = 0 (a plain running mean): the longest average there is
MAX_SIGMA_REL = 12**-0.5


@dataclass(frozen=True)
class Rule:
    """What a value must be: in words (`expected`, as errors say it), as a test (`ok`), and how
    a flag's text becomes a value (`kind`, which may raise an error saying what is wrong).
    `ok` None: any value `kind` gives. `choices`: the values allowed, listed by the flag;
    `item`: the rule of each value of a comma-separated list."""

    expected: str
    ok: Callable[[Any], bool] | None = None
    kind: Callable[[str], Any] = float
    choices: Collection | None = None
    item: Rule | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE_INT = Rule("a positive integer", lambda v: _is_int(v) and v > 0, int)
NONNEG_INT = Rule("a non-negative integer", lambda v: v >= 0, int)
POSITIVE = Rule("a positive number", lambda v: v > 0)
NONNEG = Rule("a non-negative number", lambda v: v >= 0)
UNIT = Rule("a number in (0, 1]", lambda v: 0 < v <= 1)
DECAY = Rule("a number in [0, 1)", lambda v: 0 <= v < 1)
OPEN_UNIT = Rule("a number in (0, 1)", lambda v: 0 < v < 1)
PROBABILITY = Rule("a probability in [0, 1)", lambda v: 0 <= v < 1)
SEED = Rule("an integer in [0, 2^63)", lambda v: 0 <= v < 2**63, int)
SIGMA_REL = Rule("a number in (0, 0.288)", lambda v: 0 < v < MAX_SIGMA_REL)
ANY_FLOAT = Rule("a number")


def one_of(values: Collection, expected: str | None = None) -> Rule:
    """One of `values` (a flag lists them as its choices). A dict stays live: a preset
    registered after this declaration is one of its keys too."""
    first = next(iter(values))
    kind = type(first) if not isinstance(first, str) else str
    words = expected or f"one of {', '.join(map(str, values))}"
    return Rule(words, lambda v: v in values, kind, choices=values)


def each(rule: Rule, expected: str) -> Rule:
    """A tuple of values, each following `rule` (a flag reads them comma-separated)."""
    ok = rule.ok or (lambda v: True)
    return Rule(expected, lambda vs: all(ok(v) for v in vs), rule.kind, item=rule)


@dataclass(frozen=True)
class Setting:
    """How a setting is given as a flag (none where its group's title is None) and the rules
    it follows.

    `rule` holds at construction and is the flag's type too; `flag_rule` is the flag's alone,
    for values the library takes as they come or checks where it uses them. `switch` is
    "store_true" (a flag that turns it on) or "both" (--name / --no-name). `flag` names the
    flag where it is not --name-with-dashes; `aliases` are more names for it. `resumable`: a
    resumed run may take a new value (how long it trains, how often it writes, how fast it runs,
    where its files are); every other setting is the run's own, kept from its checkpoint
    (ddpm.train.resume)."""

    help: str
    group: Group
    rule: Rule | None = None
    flag_rule: Rule | None = None
    switch: str | None = None
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    resumable: bool = False

    def flag_of(self, name: str) -> str:
        """The flag of the setting called `name`: --name-with-dashes unless it names its own."""
        return self.flag or f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class Group:
    """A flag group (its title as `ddpm train --help` shows it); calling it declares one
    dataclass field whose flag sits in the group. `resumable`: whether its settings may change
    on --resume, unless one says otherwise."""

    title: str | None
    description: str | None = None
    resumable: bool = False

    def __call__(self, default: Any, help: str, **how: Any) -> Any:
        how.setdefault("resumable", self.resumable)
        return dataclasses.field(default=default, metadata={"setting": Setting(help, self, **how)})


def _size(text: str) -> str:
    parse_size(text)  # DataError saying what is wrong
    return text


def _run_folder(text: str) -> str:
    if world_from_env()[0] == 0:  # under torchrun only rank 0 writes, so only it looks
        check_output_folder(text, "run folder")  # ConfigError saying what is wrong
    return text


SIZE = Rule("N or HxW", lambda v: _size(v) == v, _size)
RUN_FOLDER = Rule("a run folder", kind=_run_folder)
DEVICE = Rule(
    "auto, cpu, cuda[:N] or mps",
    lambda v: v == "auto" or v.split(":")[0] in ("cpu", "cuda", "mps"),
    str,
)
AT_LEAST_2 = Rule("an integer >= 2", lambda v: _is_int(v) and v >= 2, int)

DATA = Group("data")
MODEL = Group("model")
DIFFUSION = Group("diffusion")
OPTIMISATION = Group("optimisation")
# where a run writes, how often, how fast and on what it runs, and what it measures on the
# way: none of them changes what the network learns, so a resumed run may take new values
OUTPUT = Group("output", resumable=True)
SPEED = Group("speed", resumable=True)
DDP = Group(
    "several GPUs (torchrun --nproc-per-node N -m ddpm train ...)",
    "--batch-size is the global batch, split evenly over the processes; each process\n"
    "trains in DistributedDataParallel and rank 0 alone writes files",
    resumable=True,
)
EVALUATION = Group("evaluation during training", resumable=True)
NO_FLAG = Group(None)  # settings of the library alone


def settings_of(cls: Any) -> dict[str, tuple[dataclasses.Field, Setting]]:
    """Field name -> (field, its Setting) for every declared setting of a dataclass."""
    return {
        f.name: (f, f.metadata["setting"])
        for f in dataclasses.fields(cls)
        if "setting" in f.metadata
    }


def flag_name(cls: Any, name: str) -> str:
    """How errors name the setting `name` of `cls`: its flag (--name-with-dashes), or the
    field's own name for a setting of the library alone."""
    setting = settings_of(cls)[name][1]
    return setting.flag_of(name) if setting.group.title is not None else name


def check_settings(obj: Any) -> None:
    """Every declared rule of `obj`'s fields, in declaration order: ConfigError naming the
    first setting (by its flag) that breaks its rule. None passes where the default is None
    (not given)."""
    for name, (f, s) in settings_of(type(obj)).items():
        value = getattr(obj, name)
        if s.rule is None or s.rule.ok is None or (value is None and f.default is None):
            continue
        if not s.rule.ok(value):
            who = flag_name(type(obj), name)
            raise ConfigError(f"{who} must be {s.rule.expected}, got {value!r}")
