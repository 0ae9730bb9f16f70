"""syntax.py's character checks take exactly what the patterns they replaced took.

The patterns (once `re` patterns of syntax.py and business.py) are the reference here, matched
whole (`fullmatch`: the old `$` also let a trailing newline through, which no value should
carry).  Random strings are drawn mostly from the characters the checks care about.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from eni_guest import business, syntax

CHARS = st.text(alphabet="0e9aF:-._ /\t\n\u00e9\u2003xZ", max_size=20)
MACS = st.builds(
    lambda parts, sep: sep.join(parts),
    st.lists(st.text(alphabet="0123456789abcdefAB", min_size=0, max_size=3), max_size=7),
    st.sampled_from([":", "-"]),
)


def same(check, pattern: str, text: str) -> None:
    assert check(text) == bool(re.fullmatch(pattern, text)), text


@settings(max_examples=3000)
@given(st.one_of(CHARS, MACS))
def test_the_checks_take_what_the_patterns_took(text: str) -> None:
    same(syntax.is_mac, r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", text)
    same(syntax.is_eni_id, r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", text)
    same(syntax._mac_like, r"[0-9A-Fa-f]{1,2}([:-][0-9A-Fa-f]{1,2})+", text)
    same(syntax._host_label, r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", text)
    same(business._good_name, r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text)
    assert syntax.fits_ifname(text) == (re.search(r"[\s/:]", text) is None)


def test_lengths_at_the_limits() -> None:
    assert syntax.is_eni_id("e" * 128) and not syntax.is_eni_id("e" * 129)
    assert syntax._host_label("a" * 63) and not syntax._host_label("a" * 64)
    assert business._good_name("b" * 64) and not business._good_name("b" * 65)
    assert syntax.is_mac("0e:11:22:33:44:55") and not syntax.is_mac("0e:11:22:33:44:55\n")
    assert not syntax.is_eni_id("") and not syntax._mac_like("") and not syntax.is_mac("")
