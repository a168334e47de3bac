"""The decoder-schedule overrides a .sedic file carries: one typed record.

Each field of `ScheduleOverrides` is one override: its type (int steps, float guidance, a named
choice as a `Literal`), its key in the settings section, how the value is stored (scale, limits
of the stored code; docs/bitstream.md, "Settings section") and its help text. Everything else is
derived from `OVERRIDES`, the fields' descriptions: the bitstream's key table and value codes, the
checks of `codec.settings_section`, the schedule flags of `sedic compress` and `sedic batch
compress` (`add_arguments`) and the server's form fields (`sedic.server.forms`). A new override is
one field here, its row in docs/bitstream.md and a decoder setting of the same name
(`restoration.settings.DecoderSettings`); tests/test_schedule.py checks that each derived place
lists exactly these fields.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast, get_args, get_type_hints

from .errors import InputError

Schedule = Literal["sequential", "fused"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)  # the order is the file format: 0, 1


def _override(key: int, help: str, *, scale: int = 1, low: int = 0, high: int = 1000) -> Any:
    """A field of the record: None (the profile's value) unless given. low/high bound the stored
    code (value * scale); a named choice stores its index, so its limits come from its choices."""
    return field(default=None, metadata={"key": key, "help": help, "scale": scale, "low": low, "high": high})


@dataclass(frozen=True)
class ScheduleOverrides:
    """What a file changes in its profile's decoder schedule; None = the profile's value.

    Made from any numbers (numpy's too), it holds what the file carries: ints for steps, floats
    for guidance (in the file's tenths), a `Schedule` name; a value the file cannot carry exactly
    is an InputError (docs/bitstream.md: refused, not rounded)."""

    object_steps: int | None = _override(1, "denoising steps of each object stage", low=1)
    object_cfg: float | None = _override(3, "classifier-free guidance of object stages", scale=10)
    final_steps: int | None = _override(2, "denoising steps of the final stage", low=1)
    final_cfg: float | None = _override(4, "classifier-free guidance of the final stage", scale=10)
    schedule: Schedule | None = _override(5, "decoder schedule: sequential (the paper's: objects one by one, "
                                          "then the whole image) or fused (one pass; docs/orag.md)")

    def __post_init__(self):
        for spec in OVERRIDES:
            value = getattr(self, spec.name)
            if value is not None:  # normalized to what the file will carry (4.0 steps -> 4)
                object.__setattr__(self, spec.name, spec.value(spec.code(value)))

    @staticmethod
    def check_names(names) -> None:
        unknown = set(names) - {spec.name for spec in OVERRIDES}
        if unknown:
            raise InputError(f"unknown schedule settings {sorted(unknown)} "
                             f"(known: {', '.join(spec.name for spec in BY_KEY)})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ScheduleOverrides:
        cls.check_names(values)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The overrides given, in the file's key order (what `sedic inspect` shows)."""
        return {spec.name: getattr(self, spec.name) for spec in BY_KEY if getattr(self, spec.name) is not None}


@dataclass(frozen=True)
class Override:
    """One field of ScheduleOverrides as the file stores it: `key`, then its value's code in
    low..high (value * scale for numbers, the index in `choices` for a named choice)."""

    name: str
    key: int
    kind: type  # int, float or str (a named choice)
    help: str
    scale: int
    low: int
    high: int
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def code(self, value: Any) -> int:
        """The code of a value, or an InputError saying why the file cannot carry it."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise InputError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return self.choices.index(value)
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise InputError(f"{self.name} must be a number, got {value!r}")
        value = cast(float, value)  # a numbers.Real: the type system does arithmetic on float only (PEP 484)
        low, high = self.low / self.scale, self.high / self.scale
        if not low <= value <= high:  # also NaN and inf, and 1e308 whose scaled code round() cannot make an int
            raise InputError(f"{self.name}={value!r} out of range (must be in {low:g}..{high:g})")
        code = round(value * self.scale)
        # Refuse what the file cannot carry rather than decode with another value than asked
        # (round() would turn a guidance of 0.04 into 0 and 3.25 into 3.2).
        if abs(code - value * self.scale) > 1e-6:
            unit = ("a whole number" if self.scale == 1
                    else f"a multiple of {1 / self.scale:g} (the file stores it in steps of {1 / self.scale:g})")
            raise InputError(f"{self.name} must be {unit}, got {value}")
        return code

    def value(self, code: int) -> Any:
        """The value a code (already within low..high) stands for."""
        if self.choices:
            return self.choices[code]
        return code / self.scale if self.kind is float else code


def _describe() -> tuple[Override, ...]:
    hints = get_type_hints(ScheduleOverrides)
    specs = []
    for f in fields(ScheduleOverrides):
        kind = next(t for t in get_args(hints[f.name]) if t is not type(None))  # X | None -> X
        meta = dict(f.metadata)
        choices: tuple[str, ...] = ()
        if getattr(kind, "__origin__", None) is Literal:
            choices, kind = get_args(kind), str
            meta["high"] = len(choices) - 1
        if kind not in (int, float, str):
            raise TypeError(f"ScheduleOverrides.{f.name}: the file carries int, float or a Literal, not {kind}")
        specs.append(Override(f.name, meta["key"], kind, meta["help"], meta["scale"], meta["low"], meta["high"],
                              choices))
    return tuple(specs)


OVERRIDES: tuple[Override, ...] = _describe()  # in the record's order (the flags' and the form's)
BY_KEY: tuple[Override, ...] = tuple(sorted(OVERRIDES, key=lambda spec: spec.key))  # the file's order


def add_arguments(parser, stored: str) -> None:
    """One argparse option per override (`--object-steps`, ...), default None: the profile's.
    `stored` ends each help text (where the value goes)."""
    for spec in OVERRIDES:
        parser.add_argument(spec.flag, type=spec.kind, default=None, choices=spec.choices or None,
                            help=f"{spec.help}, {stored}")


def from_arguments(args) -> dict[str, Any]:
    """The overrides given on a command line made by add_arguments, as the API's `schedule` dict."""
    return {spec.name: getattr(args, spec.name) for spec in OVERRIDES if getattr(args, spec.name) is not None}

