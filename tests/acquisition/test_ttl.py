"""Code words on TTL lines: written under each scheme, read back with none lost, repeated or not."""

import pytest

from acquisition.config import TtlConfig
from acquisition.ttl import Lines, Transition, TtlDecoder, TtlEncoder, decode_transitions, encode_word, pulse_samples

RTZ = Lines(8, "return_to_zero")
STROBE = Lines(8, "strobe", strobe_line=7, photodiode_line=9)


def written(lines, codes, samples, pulse=150):
    """Transitions of codes asked for at `samples`, in the order a recording system would see them."""
    enc = TtlEncoder(lines, pulse)
    raised, out = [], []
    for code, s in zip(codes, samples):
        r, tr = enc.write(code, s)
        raised.append(r)
        out.extend(tr)
    return raised, sorted(out, key=lambda t: t.sample), enc


@pytest.mark.parametrize("lines", [RTZ, STROBE])
def test_repeated_codes_each_come_back_once_at_their_sample(lines):
    codes = [20, 20, 20, 10, 30, 30, 31, 20]
    samples = [1000 * (k + 1) for k in range(len(codes))]
    raised, transitions, _ = written(lines, codes, samples)
    assert raised == samples  # far enough apart: nothing delayed
    words, unknown = decode_transitions(lines, transitions)
    assert [(d.kind, d.sample, d.value) for d in words] == [("word", s, c) for s, c in zip(samples, codes)]
    assert unknown == 0


def test_return_to_zero_goes_back_to_zero_and_strobe_rises_with_the_data():
    assert encode_word(RTZ, 20, 100, 5) == [
        Transition(100, 2, True),
        Transition(100, 4, True),
        Transition(105, 2, False),
        Transition(105, 4, False),
    ]
    # Strobe on line 7: bit k on the k-th data line (line 7 skipped, so bit 7 would go on line 8 - none here).
    assert encode_word(STROBE, 20, 100, 5) == [
        Transition(100, 2, True),
        Transition(100, 4, True),
        Transition(100, 7, True),
        Transition(105, 2, False),
        Transition(105, 4, False),
        Transition(105, 7, False),
    ]
    strobe_mid = Lines(8, "strobe", strobe_line=3)
    assert strobe_mid.word_lines(0b1111) == 0b10111  # bit 3 moves past the strobe to line 4
    assert strobe_mid.code_of(0b10111) == 0b1111


def test_codes_too_close_are_delayed_in_order_never_merged():
    # Three codes asked in the same sample and one a pulse later: each waits for the word and zero before it.
    raised, transitions, enc = written(RTZ, [30, 10, 10, 20], [500, 500, 500, 505], pulse=5)
    assert raised == [500, 510, 520, 530]
    assert enc.delayed_words == 3 and enc.max_delay_samples == 25
    words, _ = decode_transitions(RTZ, transitions)
    assert [(d.sample, d.value) for d in words] == [(500, 30), (510, 10), (520, 10), (530, 20)]


def test_a_word_read_only_once_all_lines_of_its_sample_are_in():
    dec = TtlDecoder(RTZ)
    assert dec.feed(100, 2, True) == []  # line 4 of the same word may still come
    assert dec.feed(100, 4, True) == []
    out = dec.feed(105, 2, False)  # a later sample closes the word
    assert [(d.sample, d.value) for d in out] == [(100, 20)]
    assert dec.feed(105, 4, False) == [] and dec.flush() == []  # falling lines make no word


def test_unknown_lines_are_counted_and_change_no_code():
    transitions = [
        Transition(100, 2, True),
        Transition(100, 12, True),
        Transition(100, 4, True),
        Transition(103, 12, False),
        Transition(105, 2, False),
        Transition(105, 4, False),
        Transition(200, 7, True),
        Transition(200, 2, True),
        Transition(205, 7, False),
        Transition(205, 2, False),
    ]
    words, unknown = decode_transitions(RTZ, transitions)
    # Line 7 is a code line under return_to_zero: 2 + 7 -> code 0b10000100 = 132, never 20 or 4.
    assert [(d.sample, d.value) for d in words] == [(100, 20), (200, 132)]
    assert unknown == 2
    dec = TtlDecoder(Lines(6, "return_to_zero"))
    assert dec.feed(10, 7, True) == [] and dec.flush() == []
    assert dec.unknown_line_events == 1 and dec.unknown_lines == {7}


def test_strobe_reads_data_only_at_its_rising_edge_and_reports_the_photodiode():
    tr = [
        Transition(100, 1, True),  # data change without strobe: no word
        Transition(110, 9, True),  # photodiode edge
        Transition(120, 7, True),  # strobe rises: the data lines hold 2
        Transition(125, 7, False),
        Transition(125, 1, False),
        Transition(130, 7, True),  # strobe with no data: code 0 is a word under the strobe scheme
        Transition(131, 9, False),
        Transition(135, 7, False),
    ]
    words, unknown = decode_transitions(STROBE, tr)
    # A photodiode edge comes out at once; a word once its sample is closed, so compare in sample order.
    assert sorted((d.sample, d.kind, d.value) for d in words) == [
        (s, k, v) for k, s, v in [("photodiode", 110, 1), ("word", 120, 2), ("word", 130, 0), ("photodiode", 131, 0)]
    ]
    assert unknown == 0


def test_a_duplicated_event_repeats_nothing():
    tr = encode_word(RTZ, 20, 100, 5)
    words, _ = decode_transitions(RTZ, tr[:2] + tr[:2] + tr[2:])  # the rising events twice
    assert [(d.sample, d.value) for d in words] == [(100, 20)]


def test_codes_that_do_not_fit_the_lines_are_refused():
    with pytest.raises(ValueError, match="idle word"):
        encode_word(RTZ, 0, 1, 5)
    with pytest.raises(ValueError, match="does not fit"):
        encode_word(RTZ, 256, 1, 5)
    with pytest.raises(ValueError, match="does not fit"):
        encode_word(STROBE, 128, 1, 5)  # 7 data lines beside the strobe
    with pytest.raises(ValueError, match="photodiode_line"):
        Lines(8, "return_to_zero", photodiode_line=3)
    assert pulse_samples(5.0, 30000) == 150 and pulse_samples(0.001, 1000) == 1


def test_rig_file_ttl_section_is_checked():
    assert TtlConfig().lines() == Lines(8, "return_to_zero", None, None)
    for bad, why in [
        ({"scheme": "strobe"}, "needs strobe_line"),
        ({"strobe_line": 3}, "only used with"),
        ({"scheme": "strobe", "strobe_line": 8}, "not one of"),
        ({"photodiode_line": 2}, "own line"),
        ({"n_lines": 4}, "greater than or equal"),
        ({"pulse_ms": 0}, "greater than or equal"),
        ({"lines": 8}, "Extra inputs"),
    ]:
        with pytest.raises(ValueError, match=why):
            TtlConfig(**bad)
