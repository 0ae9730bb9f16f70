"""README "Set up": its commands, as written, on a fresh Debian 12 machine with only Python.

The machine is a chroot (``eni_guest_lab.realvm.fresh``: debootstrap minbase + python3, no
pip, iproute2 or nftables); the commands are read from README.md's first ``sh`` block, every
line before ``bash tests/run.sh`` (the test command, which is CI itself).  They must install
what they need from the package registries and end with the demo's "all checks passed".
"""

from __future__ import annotations

import re

from eni_guest_lab.realvm.fresh import run_fresh
from eni_guest_lab.realvm.image import REPO_ROOT


def readme_setup_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Set up") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's Set up has no sh block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines[: lines.index("bash tests/run.sh")] if line]


def test_readme_setup_commands_work_on_a_fresh_machine() -> None:
    commands = readme_setup_commands()
    assert any("eni-guest demo" in c for c in commands), commands
    # The first must find nothing to use: no pip, no nft, no ip on the fresh machine.
    probe = (
        "for t in pip3 nft ip sysctl; do if command -v $t; then echo $t is there; exit 9; fi; done"
    )
    cp = run_fresh(probe + "\n" + "\n".join(commands))
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out[-4000:]
    assert "all checks passed" in cp.stdout, out[-4000:]
    assert "cleaned up: every namespace of the demo is gone" in cp.stdout, out[-4000:]
    print(f"[fresh] README's set-up commands on a fresh Debian 12 root: {commands}")
