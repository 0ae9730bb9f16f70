"""apply keeps NetworkManager and systemd-networkd off the secondary ENIs, never the primary.

The drop-ins are written under the VM's own root (config distro_root), so the test machine's
/run is never touched; on a real VM the root is "/" and the managers are asked to reload.
"""

from __future__ import annotations

import copy

from conftest import PRIMARY_MAC, SECOND_MAC, THIRD_MAC

NM = "run/NetworkManager/conf.d/90-eni-guest.conf"
NETWORKD = "run/systemd/network/05-eni-guest.network"


def test_drop_ins_follow_the_secondary_enis(simvm, scenario_3eni) -> None:
    vm = simvm(scenario_3eni)
    root = vm.distro_root()
    r = vm.agent("apply")
    assert r.returncode == 0, r.stderr
    nm, networkd = (root / NM).read_text(), (root / NETWORKD).read_text()
    for text in (nm, networkd):
        assert SECOND_MAC in text and THIRD_MAC in text
        assert PRIMARY_MAC not in text
    assert "unmanaged-devices+=" in nm and "Unmanaged=yes" in networkd
    assert f"wrote {root / NM}" in r.stderr

    # nothing rewritten, nothing logged on a second run
    again = vm.agent("apply")
    assert again.returncode == 0 and again.stderr == ""

    # an ENI gone from metadata loses its stanza; the others keep theirs
    changed = copy.deepcopy(scenario_3eni)
    changed["enis"] = [e for e in changed["enis"] if e["mac"] != THIRD_MAC]
    vm.update_scenario(changed)
    assert vm.agent("apply").returncode == 0
    nm = (root / NM).read_text()
    assert SECOND_MAC in nm and THIRD_MAC not in nm


def test_opt_out_removes_the_drop_ins(simvm, scenario_3eni) -> None:
    vm = simvm(scenario_3eni)
    root = vm.distro_root()
    assert vm.agent("apply").returncode == 0
    assert (root / NM).exists()
    off = vm.agent("apply", env={"ENI_GUEST_MANAGE_DISTRO_NETWORK": "false"})
    assert off.returncode == 0
    assert not (root / NM).exists() and not (root / NETWORKD).exists()


def test_a_planted_link_is_refused_before_the_kernel_changes(simvm, scenario_3eni, tmp_path):
    """A symbolic link where the networkd drop-in goes: apply writes nothing through it, exits
    2 naming the path in one line, and has changed nothing in the kernel."""
    vm = simvm(scenario_3eni)
    root = vm.distro_root()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = root / NETWORKD
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    before = vm.snapshot()
    r = vm.agent("apply")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"eni-guest: {link}: is a symbolic link: refused (eni-guest writes it only itself)"
    ]
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert vm.snapshot() == before
