"""The I-S-E-O quantization spec of paper Table 7 (and Table 1's "Q (W/A)" column).

A spec names the weight/activation bits ``W/A`` of each real-valued layer group::

    "8/8-4/8-4/8-8/8"            Input (stem conv) - Squeeze - Expand - Output (classifier)
    "8/8-4/8-4/8-8/8-4/8"        ... plus an optional 5th group D: every other real-valued
                                 Conv2d/Linear (in the zoo: the 1x1 downsample projections)
    "32/32"                      one field: the same bits for I, S, E and O (D stays float)
    "8/8-4/8-4/8-8/8;w=channel"  options after ``;`` (see :class:`QuantSpec`)

``32`` means float: ``32/32`` leaves a group untouched, ``8/32`` quantizes only the weights,
``32/8`` only the layer input.  Weight bits are 2-8 (codes are exported as uint8), activation
bits 2-16.  ``str(parse_spec(s))`` is the canonical form stored in ``model.quant_spec``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

#: group names in spec order; the letters are those of paper Table 7 plus D
GROUPS = ("input", "squeeze", "expand", "output", "downsample")
LETTERS = dict(zip(GROUPS, "ISEOD"))

FLOAT_BITS = 32
WEIGHT_BITS = range(2, 9)
ACT_BITS = range(2, 17)

GRANULARITIES = ("tensor", "channel")
ACT_RANGES = ("calibrated", "dynamic")

#: Table 1's final spec of BNext-T/S/M/L ("8/8-4/8-8/8": SE convs at 4-bit weights)
PAPER_SPEC = "8/8-4/8-4/8-8/8"
#: the five rows of Table 7, top to bottom
TABLE7_SPECS = ("32/32", "8/8-8/8-8/8-8/8", "8/8-4/8-4/8-8/8", "8/8-4/8-4/4-8/8", "8/8-4/4-4/4-8/8")

EXAMPLE = "I-S-E-O like 8/8-4/8-4/8-8/8"
_FIELD = re.compile(r"^(\d+)/(\d+)$")
_OPTION_KEYS = {"w": "weight_granularity", "a": "act_granularity", "range": "act_range"}


@dataclass(frozen=True)
class Bits:
    """Weight and activation bit widths of one group (32 = float)."""

    weight: int = FLOAT_BITS
    act: int = FLOAT_BITS

    @property
    def is_float(self) -> bool:
        return self.weight >= FLOAT_BITS and self.act >= FLOAT_BITS

    def __str__(self) -> str:
        return f"{self.weight}/{self.act}"


FLOAT = Bits()


@dataclass(frozen=True)
class QuantSpec:
    """A parsed spec: bits per group plus the quantizer options.

    Options (``;key=value`` in the string form, only written when not the default):
        ``w``: weight granularity of Eq. 6's min/max — ``tensor`` (default, the paper: one
            alpha/beta per layer after the per-channel abs-mean scaling) or ``channel``.
        ``a``: activation granularity of Eq. 5 — ``tensor`` (default) or ``channel``.
        ``range``: activation range — ``calibrated`` (default: min/max buffers set by
            :func:`bnext.quant.calibrate`, updated by a running average while training,
            deterministic per sample) or ``dynamic`` (Eq. 5's min/max of every batch).
    """

    input: Bits = FLOAT
    squeeze: Bits = FLOAT
    expand: Bits = FLOAT
    output: Bits = FLOAT
    downsample: Bits = FLOAT
    weight_granularity: str = "tensor"
    act_granularity: str = "tensor"
    act_range: str = "calibrated"

    def group(self, name: str) -> Bits:
        if name not in GROUPS:
            raise ValueError(f"unknown group {name!r}; expected one of {GROUPS}")
        return getattr(self, name)

    @property
    def is_float(self) -> bool:
        return all(self.group(g).is_float for g in GROUPS)

    def __str__(self) -> str:
        parts = [str(self.group(g)) for g in GROUPS[:4]]
        if not self.downsample.is_float:
            parts.append(str(self.downsample))
        text = "-".join(parts)
        defaults = QuantSpec()
        for key, attr in _OPTION_KEYS.items():
            if getattr(self, attr) != getattr(defaults, attr):
                text += f";{key}={getattr(self, attr)}"
        return text


def _bits(text: str, group: str, spec: str) -> Bits:
    m = _FIELD.match(text.strip())
    if not m:
        raise ValueError(f"invalid quantization spec {spec!r}: group {LETTERS[group]} is {text!r}, "
                         f"expected W/A bits such as 8/8; expected {EXAMPLE}")
    w, a = int(m.group(1)), int(m.group(2))
    if w != FLOAT_BITS and w not in WEIGHT_BITS:
        raise ValueError(f"invalid quantization spec {spec!r}: weight bits {w} of group {LETTERS[group]} "
                         f"must be 2-8 or 32 (float)")
    if a != FLOAT_BITS and a not in ACT_BITS:
        raise ValueError(f"invalid quantization spec {spec!r}: activation bits {a} of group {LETTERS[group]} "
                         f"must be 2-16 or 32 (float)")
    return Bits(w, a)


def parse_spec(spec: str | QuantSpec) -> QuantSpec:
    """Parse ``"I-S-E-O[-D][;w=..][;a=..][;range=..]"`` (see module docstring); errors say what was expected."""
    if isinstance(spec, QuantSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"invalid quantization spec {spec!r}: expected {EXAMPLE}")
    head, *options = spec.replace(" ", "").split(";")
    fields_ = head.split("-")
    if len(fields_) == 1:
        fields_ = fields_ * 4
    if len(fields_) not in (4, 5):
        raise ValueError(f"invalid quantization spec {spec!r}: got {len(fields_)} groups, expected {EXAMPLE} "
                         f"(4 groups, an optional 5th D group, or one W/A for all)")
    kw: dict = {g: _bits(f, g, spec) for g, f in zip(GROUPS, fields_)}
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or key not in _OPTION_KEYS:
            raise ValueError(f"invalid quantization spec {spec!r}: option {opt!r}, expected one of "
                             f"{[k + '=...' for k in _OPTION_KEYS]}")
        attr = _OPTION_KEYS[key]
        allowed = ACT_RANGES if attr == "act_range" else GRANULARITIES
        if value not in allowed:
            raise ValueError(f"invalid quantization spec {spec!r}: {key}={value!r}, expected one of {allowed}")
        kw[attr] = value
    return QuantSpec(**kw)


def with_options(spec: str | QuantSpec, **options: str) -> QuantSpec:
    """``spec`` with some options replaced (``weight_granularity``, ``act_granularity``, ``act_range``)."""
    parsed = parse_spec(spec)
    names = {f.name for f in fields(QuantSpec)} - set(GROUPS)
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown spec option(s) {unknown}; expected {sorted(names)}")
    return parse_spec(str(replace(parsed, **options)))  # validated through the string form
