"""The drop-ins' render cache (templating.cached_in): a run whose ENIs did not change writes the
same files without importing jinja2; a change of the MACs (or of a template) renders again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eni_guest import distro
from eni_guest.distro import NM_DROPIN, RENDERED

PRIMARY, SECOND, THIRD = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"

RUN = """
import sys
from pathlib import Path
from eni_guest import distro
changed = distro.keep_off(sys.argv[2:], "{primary}", Path(sys.argv[1]))
print("jinja2" in sys.modules, len(changed))
"""


def keep_off(root: Path, *macs: str) -> tuple[bool, int]:
    code = RUN.format(primary=PRIMARY)
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), *macs], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_the_same_enis_render_from_the_cache_without_jinja2(tmp_path: Path) -> None:
    assert keep_off(tmp_path, SECOND) == (True, 3)  # rendered, three drop-ins written
    first = (tmp_path / NM_DROPIN).read_text()
    assert (tmp_path / RENDERED).is_file()
    assert keep_off(tmp_path, SECOND) == (False, 0)  # from the cache, nothing changed
    assert (tmp_path / NM_DROPIN).read_text() == first


def test_other_macs_render_again(tmp_path: Path) -> None:
    keep_off(tmp_path, SECOND)
    assert keep_off(tmp_path, SECOND, THIRD) == (True, 2)
    assert THIRD in (tmp_path / NM_DROPIN).read_text()
    # the same as rendering without any cache
    expected = distro.render([SECOND, THIRD])[NM_DROPIN]
    assert (tmp_path / NM_DROPIN).read_text() == expected


def test_a_cache_anyone_could_write_is_ignored(tmp_path: Path) -> None:
    keep_off(tmp_path, SECOND)
    (tmp_path / RENDERED).chmod(0o666)
    assert keep_off(tmp_path, SECOND)[0] is True
