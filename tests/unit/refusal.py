"""What a read refused, in one line: the whole read (exception), or the one secondary ENI it
concerns, which the run then leaves as it is while it configures the others."""

from __future__ import annotations

from typing import Callable

import pytest

from eni_guest.errors import MetadataInvalid
from eni_guest.model import Instance


def refusal(read: Callable[[], Instance], exc: type = MetadataInvalid) -> str:
    try:
        instance = read()
    except exc as e:
        message = str(e)
    else:
        if exc is not MetadataInvalid or len(instance.invalid) != 1:
            pytest.fail(f"expected {exc.__name__} or one refused ENI, got {instance.invalid}")
        bad = instance.invalid[0]
        assert instance.by_mac(bad.mac) is None  # nothing of it is configured
        message = bad.reason
    assert "\n" not in message
    return message
