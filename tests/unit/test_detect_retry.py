"""`provider = auto` for apply: detection is retried within metadata_deadline (a slow guest's
probes missed their first 3 s window and the whole boot apply failed)."""

from __future__ import annotations

import time

import pytest

from eni_guest import providers
from eni_guest.config import Config
from eni_guest.errors import MetadataUnavailable
from eni_guest.providers import detect


def test_a_late_answer_is_still_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    windows: list[float] = []

    def choose(config: Config, *, window: float) -> tuple[str, str]:
        windows.append(window)
        if len(windows) < 2:
            raise MetadataUnavailable("no cloud recognised: aws: no answer within 3 s")
        return "aws", "metadata probe: answered 200"

    monkeypatch.setattr(detect, "choose", choose)
    provider = providers.get_provider(Config(metadata_deadline=10.0))
    assert providers.chosen_because(provider) == "metadata probe: answered 200"
    assert windows == [3.0, 6.0]  # the retry gets a longer window


def test_nothing_answering_fails_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    tries: list[float] = []

    def choose(config: Config, *, window: float) -> tuple[str, str]:
        tries.append(time.monotonic())
        raise MetadataUnavailable("no cloud recognised")  # at once: refused, say

    monkeypatch.setattr(detect, "choose", choose)
    start = time.monotonic()
    with pytest.raises(MetadataUnavailable):
        providers.get_provider(Config(metadata_deadline=6.0))
    took = time.monotonic() - start
    assert 2.0 <= took <= 6.5, took
    assert 3 <= len(tries) <= 4  # a second at least between tries, no busy loop
