"""Event code words on TTL lines: written onto the lines (TtlEncoder), read back from transitions (TtlDecoder).

`Lines.scheme` (the rig file's `[cortex.ttl]`) is "return_to_zero" (a word is read when lines rise; zero is
the idle word and cannot be sent) or "strobe" (a word is read at the strobe line's rising edge). Code bit k
goes on the k-th data line. A word holds the lines `pulse` samples and the zero word then holds them as long:
a word asked for sooner is delayed, never merged or dropped. Every edge on `photodiode_line` is one onset as
the screen showed it. The code-word scheme: docs/live-rig.md.

Pure logic on sample numbers of the recording system's clock: no sockets, no wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SCHEMES = ("return_to_zero", "strobe")


class Transition(NamedTuple):
    """One TTL line changing state at one sample of the recording system (an Open Ephys TTL event)."""

    sample: int
    line: int
    state: bool


@dataclass(frozen=True)
class Lines:
    """Which lines carry what: the data lines of a code word, the strobe, the photodiode."""

    n_lines: int = 8
    scheme: str = "return_to_zero"
    strobe_line: int | None = None
    photodiode_line: int | None = None

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"TTL scheme {self.scheme!r} is neither 'return_to_zero' nor 'strobe'")
        if self.scheme == "strobe" and (self.strobe_line is None or not 0 <= self.strobe_line < self.n_lines):
            raise ValueError(f"TTL scheme 'strobe' needs a strobe_line among lines 0..{self.n_lines - 1}")
        if self.photodiode_line is not None and self.photodiode_line < self.n_lines:
            raise ValueError(f"photodiode_line {self.photodiode_line} is one of the {self.n_lines} code lines")

    @property
    def data_lines(self) -> list[int]:
        return [k for k in range(self.n_lines) if self.scheme != "strobe" or k != self.strobe_line]

    @property
    def min_code(self) -> int:
        return 1 if self.scheme == "return_to_zero" else 0  # zero changes no line unless a strobe says so

    @property
    def max_code(self) -> int:
        return 2 ** len(self.data_lines) - 1

    def word_lines(self, code: int) -> int:
        """The bit mask of the lines that are high while `code` is on them (the strobe not included)."""
        if not self.min_code <= code <= self.max_code:
            why = " (0 is the idle word: with return_to_zero it changes no line)" if code == 0 else ""
            raise ValueError(
                f"event code {code} does not fit: {len(self.data_lines)} data lines ({self.scheme}) "
                f"carry codes {self.min_code}..{self.max_code}{why}"
            )
        mask = 0
        for bit, line in enumerate(self.data_lines):
            if code >> bit & 1:
                mask |= 1 << line
        return mask

    def code_of(self, mask: int) -> int:
        """The code a bit mask of data lines carries (the inverse of word_lines)."""
        return sum(1 << bit for bit, line in enumerate(self.data_lines) if mask >> line & 1)


def encode_word(lines: Lines, code: int, sample: int, pulse_samples: int) -> list[Transition]:
    """The transitions of one word raised at `sample` from all-zero lines and released `pulse_samples` later,
    in order (lines rising, strobe last; then all falling)."""
    if pulse_samples < 1:
        raise ValueError(f"pulse of {pulse_samples} samples: a word must hold the lines for at least one sample")
    mask = lines.word_lines(code)
    high = [line for line in range(lines.n_lines) if mask >> line & 1]
    if lines.scheme == "strobe":
        high.append(lines.strobe_line)
    return [Transition(sample, line, True) for line in high] + [
        Transition(sample + pulse_samples, line, False) for line in high
    ]


class TtlEncoder:
    """Writes words one after the other: each holds the lines `pulse_samples`, then the zero word holds them
    as long; a word asked for sooner is raised as soon as that allows (later, never merged, never dropped)."""

    def __init__(self, lines: Lines, pulse_samples: int):
        if pulse_samples < 1:
            raise ValueError(f"pulse of {pulse_samples} samples: at least one sample")
        self.lines = lines
        self.pulse_samples = int(pulse_samples)
        self.free_at: int | None = None  # the first sample the next word may be raised at
        self.words = 0
        self.delayed_words = 0
        self.max_delay_samples = 0

    def write(self, code: int, sample: int) -> tuple[int, list[Transition]]:
        """(the sample the word is raised at, its transitions)."""
        sample = int(sample)
        start = sample if self.free_at is None else max(sample, self.free_at)
        out = encode_word(self.lines, code, start, self.pulse_samples)
        self.free_at = start + 2 * self.pulse_samples
        self.words += 1
        if start > sample:
            self.delayed_words += 1
            self.max_delay_samples = max(self.max_delay_samples, start - sample)
        return start, out


class Decoded(NamedTuple):
    """What the lines said: a code word ("word", value = the code) or a photodiode edge ("photodiode",
    value = 1 rising, 0 falling), at the sample it happened."""

    kind: str
    sample: int
    value: int


class TtlDecoder:
    """Rebuilds words (and photodiode edges) from line transitions as they arrive.

    Transitions of one sample are taken together (a word's lines change in one sample), so a word is known
    only when a transition of another sample comes, or at `flush()`. A transition on a line that is neither a
    code line, nor the strobe, nor the photodiode line is counted in `unknown_line_events` and changes
    nothing. Repeating a line's state (a duplicated event) changes nothing either."""

    def __init__(self, lines: Lines):
        self.lines = lines
        self.code_mask = sum(1 << line for line in lines.data_lines)
        self.strobe_bit = 0 if lines.scheme != "strobe" else 1 << lines.strobe_line
        self.state = 0  # lines high now (data and strobe)
        self.group_sample: int | None = None
        self.rose = 0  # lines that rose in the open sample group
        self.unknown_line_events = 0
        self.unknown_lines: set[int] = set()
        self.words = 0

    def feed(self, sample: int, line: int, state) -> list[Decoded]:
        """One transition; returns what it completed (the word of an earlier sample; a photodiode edge)."""
        out: list[Decoded] = []
        if line == self.lines.photodiode_line:
            return [Decoded("photodiode", int(sample), 1 if state else 0)]
        if not (0 <= line < self.lines.n_lines):
            self.unknown_line_events += 1
            self.unknown_lines.add(int(line))
            return out
        if self.group_sample is not None and sample != self.group_sample:
            out.extend(self.flush())
        self.group_sample = int(sample)
        bit = 1 << line
        if state:
            if not self.state & bit:
                self.rose |= bit
            self.state |= bit
        else:
            self.state &= ~bit
        return out

    def flush(self) -> list[Decoded]:
        """Close the open sample group: the word it raised, if any."""
        if self.group_sample is None:
            return []
        sample, rose = self.group_sample, self.rose
        self.group_sample, self.rose = None, 0
        if self.strobe_bit:
            if not rose & self.strobe_bit:
                return []
        elif not rose & self.code_mask or not self.state & self.code_mask:
            return []
        self.words += 1
        return [Decoded("word", sample, self.lines.code_of(self.state & self.code_mask))]

    @property
    def open_sample(self) -> int | None:
        """The sample of a group not yet closed (its word is not known yet)."""
        return self.group_sample


def decode_transitions(lines: Lines, transitions) -> tuple[list[Decoded], int]:
    """All words and photodiode edges in a list of transitions, and the count of transitions on unknown lines."""
    dec = TtlDecoder(lines)
    out = []
    for t in transitions:
        out.extend(dec.feed(*t))
    out.extend(dec.flush())
    return out, dec.unknown_line_events


def pulse_samples(pulse_ms: float, sample_rate_hz: float) -> int:
    """A pulse in whole samples (at least one)."""
    return max(1, int(round(pulse_ms * sample_rate_hz / 1000)))
