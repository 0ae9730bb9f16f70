"""The udev rule, run by the real `udevadm test` against interfaces in a throw-away namespace.

`udevadm test` applies every rule to a device for real - it can rename it, change its MAC and
writes the udev database - so it never sees this machine's own interfaces: it runs inside a
network namespace we create (``ip netns exec`` remounts /sys, so /sys/class/net shows only the
namespace's links, which each test checks before anything else), in a private mount namespace
with a tmpfs on /run (our rule goes to /run/udev/rules.d, the database stays there and is gone
afterwards).  The machine's rule directories are only read.

What is proved:
* the rule parses (udev 252 has no `udevadm verify`; its rule parser reports problems as
  ``FILE:LINE ...`` lines, and there are none for ours);
* it stays silent - no RUN at all - for veth, bridge, tun, macvlan and vxlan interfaces, also
  ones named like NICs, on add and on remove;
* its RUN commands are right: a copy whose driver list also names ``veth`` (the only driver we
  can create here) starts ``eni-guest-hotplug@IFACE`` on add and ``eni-guest-unplug@IFACE`` on
  remove, and its name and device-type guards still hold;
* on remove, where the driver is no longer in sysfs, the real rule matches ``ID_NET_DRIVER``
  from the udev database: a database entry saying ``ena`` starts the unplug unit.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from eni_guest.install import install, render_rule, unit_context

pytestmark = pytest.mark.e2e

RULE_NAME = "90-eni-guest.rules"
SYSTEMCTL = "/usr/bin/systemctl"

# Runs inside `ip netns exec NS unshare --mount --propagation private`.
_SCRIPT = r"""
set -eu
rule="$1"; dev="$2"; db="$3"; touch="$4"; shift 4
mount -t tmpfs -o mode=0755 eni-guest-test /run
mkdir -p /run/udev/rules.d /run/udev/data
for f in $touch; do mkdir -p "${f%/*}"; : > "$f"; done
cp "$rule" /run/udev/rules.d/90-eni-guest.rules
if [ -n "$db" ]; then
    printf '%s\n' "$db" > "/run/udev/data/n$(cat "/sys/class/net/$dev/ifindex")"
fi
for action in "$@"; do
    echo "@@@ eni-guest-test $action"
    udevadm test --action="$action" "/sys/class/net/$dev" 2>&1
done
"""


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({cp.returncode}): {cp.stderr}")
    return cp


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace named like the testbed's throw-away ones, so cleanup_stale finds leftovers."""
    name = f"egt{os.getpid():x}{secrets.token_hex(2)}-chk"
    _sh("ip", "netns", "add", name)
    try:
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _sh("ip", "netns", "del", name, check=False)


def _mac() -> str:
    return "02:" + ":".join(secrets.token_hex(1) for _ in range(5))


def _add(ns: str, *ip_args: str) -> None:
    _sh("ip", "-n", ns, *ip_args)


def _checked_in_namespace(ns: str) -> None:
    """Refuse to go on unless /sys inside the namespace shows exactly the namespace's links."""
    links = json.loads(_sh("ip", "-n", ns, "-j", "link", "show").stdout)
    expected = {link["ifname"]: link.get("address", "") for link in links}
    listing = _sh(
        "ip", "netns", "exec", ns, "sh", "-c",
        'for d in /sys/class/net/*; do echo "${d##*/} $(cat $d/address)"; done',
    ).stdout  # fmt: skip
    seen = dict((line.split() + [""])[:2] for line in listing.splitlines())
    assert seen == expected, f"/sys inside {ns} is not the namespace's: refusing udevadm test"
    host = {link.get("address") for link in json.loads(_sh("ip", "-j", "link", "show").stdout)}
    ours = {a for a in expected.values() if a and a != "00:00:00:00:00:00"}
    assert not ours & host, "a test device's MAC also exists on the host: refusing"


def udevadm_test(
    ns: str,
    rule: Path,
    dev: str,
    actions: tuple[str, ...] = ("add", "remove"),
    db: str = "",
    run_files: tuple[str, ...] = (),
) -> dict[str, list[str]]:
    """Run `udevadm test` for each action in one private /run (holding ``run_files``, empty
    files under /run); each action's output lines."""
    _checked_in_namespace(ns)
    assert all(f.startswith("/run/") and " " not in f for f in run_files)
    cp = _sh(
        "ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", _SCRIPT, "sh", str(rule), dev, db, " ".join(run_files), *actions,
    )  # fmt: skip
    out: dict[str, list[str]] = {}
    current = None
    for line in cp.stdout.splitlines():
        if line.startswith("@@@ eni-guest-test "):
            current = line[len("@@@ eni-guest-test ") :]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    assert list(out) == list(actions), cp.stdout[-2000:]
    return out


def runs(lines: list[str]) -> list[str]:
    """The programs udev would run: `run: '...'` lines of `udevadm test`."""
    return [line[len("run: '") : -1] for line in lines if line.startswith("run: '")]


def parser_complaints(lines: list[str]) -> list[str]:
    """Lines in which udev's rule parser reports a problem in our file (FILE:LINE ...)."""
    return [line for line in lines if line.startswith(f"/run/udev/rules.d/{RULE_NAME}:")]


@pytest.fixture(scope="module")
def installed_rule(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rule exactly as `eni-guest install --root` places it."""
    root = tmp_path_factory.mktemp("root")
    install(root, binary="/usr/local/bin/eni-guest")
    return root / "etc/udev/rules.d" / RULE_NAME


@pytest.fixture(scope="module")
def veth_rule(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed rule with ``veth`` (and ``bridge``) added to its driver list."""
    context = unit_context(["/usr/local/bin/eni-guest"])
    context["drivers"] = (*context["drivers"], "veth", "bridge")
    path = tmp_path_factory.mktemp("variant") / RULE_NAME
    path.write_text(render_rule(context))
    return path


def _software_links(ns: str) -> list[str]:
    _add(ns, "link", "add", "eth7", "address", _mac(), "type", "veth", "peer", "name", "eth8")
    _add(ns, "link", "add", "veth9", "address", _mac(), "type", "veth", "peer", "name", "ens8")
    _add(ns, "link", "add", "ens9", "address", _mac(), "type", "bridge")
    _add(ns, "link", "add", "docker0", "address", _mac(), "type", "bridge")
    _add(ns, "tuntap", "add", "dev", "ens12", "mode", "tun")
    _add(ns, "link", "add", "ens13", "address", _mac(), "link", "eth7", "type", "macvlan")
    _add(ns, "link", "add", "ens15", "address", _mac(), "type", "vxlan", "id", "42")
    return ["eth7", "veth9", "ens8", "ens9", "docker0", "ens12", "ens13", "ens15"]


def test_rule_parses_and_is_silent_for_software_interfaces(
    netns: str, installed_rule: Path
) -> None:
    text = installed_rule.read_text()
    assert f"{SYSTEMCTL} --no-block start eni-guest-hotplug@$name.service" in text
    for dev in _software_links(netns):
        out = udevadm_test(netns, installed_rule, dev)
        for action, lines in out.items():
            assert f"Reading rules file: /run/udev/rules.d/{RULE_NAME}" in lines
            assert parser_complaints(lines) == [], "\n".join(parser_complaints(lines))
            assert not [r for r in runs(lines) if "eni-guest" in r], (dev, action, runs(lines))
            # our marker is not set either: nothing of the rule applied to the device
            assert "ENI_GUEST_NIC=1" not in lines, (dev, action)


def test_rule_starts_units_for_a_cloud_nic_driver(netns: str, veth_rule: Path) -> None:
    _add(netns, "link", "add", "eth7", "address", _mac(), "type", "veth", "peer", "name", "eth8")
    out = udevadm_test(netns, veth_rule, "eth7")
    assert [r for r in runs(out["add"]) if "eni-guest" in r] == [
        f"{SYSTEMCTL} --no-block start eni-guest-hotplug@eth7.service"
    ]
    assert "ENI_GUEST_NIC=1" in out["add"]
    # remove reads the database the add wrote: the driver is matched from it, not from sysfs
    assert [r for r in runs(out["remove"]) if "eni-guest" in r] == [
        f"{SYSTEMCTL} --no-block start eni-guest-unplug@eth7.service"
    ]
    for lines in out.values():
        assert parser_complaints(lines) == []


def test_guards_hold_even_when_the_driver_matches(netns: str, veth_rule: Path) -> None:
    """Name guard (veth*, docker*) and device-type guard (bridge) win over the driver match."""
    _add(netns, "link", "add", "veth9", "address", _mac(), "type", "veth", "peer", "name", "eth8")
    _add(netns, "link", "add", "ens9", "address", _mac(), "type", "bridge")
    _add(netns, "link", "add", "docker0", "address", _mac(), "type", "bridge")
    for dev in ("veth9", "ens9", "docker0"):
        out = udevadm_test(netns, veth_rule, dev)
        for action, lines in out.items():
            assert not [r for r in runs(lines) if "eni-guest" in r], (dev, action)
    # the same variant does fire for the NIC-named end of the pair: the guards are the reason
    out = udevadm_test(netns, veth_rule, "eth8", actions=("add",))
    assert any("eni-guest-hotplug@eth8.service" in r for r in runs(out["add"]))


def test_remove_matches_the_driver_from_the_udev_database(netns: str, installed_rule: Path) -> None:
    """On remove sysfs no longer names a driver; udev's database still says `ena`."""
    _add(netns, "link", "add", "eth7", "address", _mac(), "type", "veth", "peer", "name", "eth8")
    db = "E:ID_NET_DRIVER=ena"
    out = udevadm_test(netns, installed_rule, "eth7", actions=("remove",), db=db)
    assert [r for r in runs(out["remove"]) if "eni-guest" in r] == [
        f"{SYSTEMCTL} --no-block start eni-guest-unplug@eth7.service"
    ]
    # and a database saying veth keeps it silent
    db = "E:ID_NET_DRIVER=veth"
    out = udevadm_test(netns, installed_rule, "eth7", actions=("remove",), db=db)
    assert not [r for r in runs(out["remove"]) if "eni-guest" in r]


def test_hotplugged_nic_is_unmanaged_once_a_run_marked_the_boot(
    netns: str, veth_rule: Path
) -> None:
    """NM_UNMANAGED / ENI_GUEST_UNMANAGED: only after eni-guest's marker, never for a NIC whose
    MAC has a file in distro-nics/ (the primary), on add, on the move of its rename and on
    change, and no RUN on move or change."""
    mac = _mac()
    _add(netns, "link", "add", "eth7", "address", mac, "type", "veth", "peer", "name", "eth8")
    marked = ("NM_UNMANAGED=1", "ENI_GUEST_UNMANAGED=1")
    before = udevadm_test(netns, veth_rule, "eth7", actions=("add",))
    assert not [p for p in marked if p in before["add"]], "marked before eni-guest ran"

    marker = "/run/eni-guest/hotplug-unmanaged"
    actions = ("add", "move", "change")
    out = udevadm_test(netns, veth_rule, "eth7", actions=actions, run_files=(marker,))
    for action in actions:
        assert all(p in out[action] for p in marked), (action, out[action][-20:])
        assert parser_complaints(out[action]) == []
    for action in ("move", "change"):
        assert not [r for r in runs(out[action]) if "eni-guest" in r], action

    primary = f"/run/eni-guest/distro-nics/{mac}"
    kept = udevadm_test(netns, veth_rule, "eth7", actions=actions, run_files=(marker, primary))
    for action in actions:
        assert not [p for p in marked if p in kept[action]], (action, "the primary was marked")
