"""The drop-ins every run writes (dropins.py) are plain Python: the first run of a boot writes
them without importing jinja2 (~40 ms of a first apply), and they say what the templates said."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eni_guest import distro, distro_hotplug, dropins
from eni_guest.distro import NETWORKD_FILE, NETWORKD_FOREIGN, NM_DROPIN
from eni_guest.distro_hotplug import NETWORKD_HOTPLUG

PRIMARY, SECOND, THIRD = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"

RUN = """
import sys
from pathlib import Path
from eni_guest import distro, distro_hotplug
root = Path(sys.argv[1])
changed = distro.keep_off(sys.argv[2:], "{primary}", root)
changed += distro_hotplug.mark_new_nics("{primary}", (), root)
print("jinja2" in sys.modules, len(changed))
"""


def keep_off(root: Path, *macs: str) -> tuple[bool, int]:
    code = RUN.format(primary=PRIMARY)
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), *macs], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_first_run_writes_the_drop_ins_without_jinja2(tmp_path: Path) -> None:
    jinja2, written = keep_off(tmp_path, SECOND, THIRD)
    assert not jinja2
    assert written == 3 + 3  # three drop-ins; the hot-plug .network, marker, primary's file
    nm = (tmp_path / NM_DROPIN).read_text()
    assert f"unmanaged-devices+=mac:{SECOND};mac:{THIRD}\n" in nm
    networkd = (tmp_path / NETWORKD_FILE).read_text()
    assert f"[Match]\nMACAddress={SECOND} {THIRD}\n" in networkd
    assert "Type=ether\n\n[Link]\nUnmanaged=yes\n" in networkd
    assert PRIMARY not in nm + networkd  # the primary stays the distro's
    foreign = (tmp_path / NETWORKD_FOREIGN).read_text()
    assert "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n" in foreign
    hotplug = (tmp_path / NETWORKD_HOTPLUG).read_text()
    assert "[Match]\nProperty=ENI_GUEST_UNMANAGED=1\n\n[Link]\nUnmanaged=yes\n" in hotplug
    assert "Runtime file" in hotplug
    assert keep_off(tmp_path, SECOND, THIRD) == (False, 0)  # the same ENIs: nothing changes


def test_every_line_of_a_drop_in_is_a_comment_a_section_or_a_setting() -> None:
    """What the managers parse: no template syntax or stray indentation left in any file."""
    texts = [
        dropins.networkd_unmanaged([SECOND]),
        dropins.networkmanager_unmanaged([SECOND]),
        dropins.NETWORKD_FOREIGN,
        dropins.networkd_hotplug(installed=True),
        dropins.networkd_hotplug(installed=False),
    ]
    for text in texts:
        assert text.endswith("\n") and "{" not in text and "}" not in text
        for line in text.splitlines():
            assert line == "" or line.startswith(("# ", "[")) or ("=" in line and line[0] != " ")


def test_the_installed_hotplug_file_says_how_to_switch_it_off() -> None:
    installed = dropins.networkd_hotplug(installed=True)
    assert "Installed by `eni-guest install`" in installed and "Runtime file" not in installed
    assert distro.render([SECOND])[NM_DROPIN] == dropins.networkmanager_unmanaged([SECOND])
    files = distro_hotplug.render({PRIMARY: "the primary ENI"})
    assert files[NETWORKD_HOTPLUG] == dropins.networkd_hotplug(installed=False)
