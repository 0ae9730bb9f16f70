"""What the simulated cloud publishes about each VM: the scenarios, in memory and on disk.

* The SimVM's own scenario, in ``scenario.json``: the metadata simulator serves it and reloads
  it whenever its mtime changes.
* The scenario of each VM added with metadata of its own (``SimVM.add_guest``), in
  ``scenario-<guest>.json``, served by that VM's own simulator.
* For ``static`` and ``jdcloud``, the agent's static ENI file (``enis.toml``), which follows the
  scenario as metadata would (all of it for ``static``, the overlay for ``jdcloud``).

ENIs no VM lists any more (detached) are remembered, so they can be attached again.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .shell import SimVMError
from .sim.render import render_static
from .sim.scenario import parse_scenario
from .topology.guests import Guest


def normalise(scenario: Mapping[str, Any]) -> dict[str, Any]:
    """A private, lower-cased copy: the caller's dict is never mutated behind its back."""
    scn = copy.deepcopy(dict(scenario))
    if scn.get("primary_mac"):
        scn["primary_mac"] = str(scn["primary_mac"]).lower()
    enis = scn.setdefault("enis", [])
    seen: set[str] = set()
    for eni in enis:
        if "mac" not in eni:
            raise SimVMError(f"scenario ENI without a mac: {eni!r}")
        eni["mac"] = str(eni["mac"]).lower()
        if eni["mac"] in seen:
            raise SimVMError(f"scenario lists MAC {eni['mac']} twice")
        seen.add(eni["mac"])
    return scn


def _without(enis: Sequence[dict[str, Any]], mac: str) -> list[dict[str, Any]]:
    return [e for e in enis if e["mac"] != mac]


class Metadata:
    """The scenarios of one simulated cloud. ``guests`` is the SimVM's list of VMs (shared);
    ``workdir`` (set when the SimVM starts) holds the files."""

    def __init__(self, scenario: Mapping[str, Any], guests: list[Guest], *, dhcp: bool) -> None:
        self.scenario: dict[str, Any] = normalise(scenario)
        self.guests = guests
        self.known: dict[str, dict[str, Any]] = {e["mac"]: e for e in self.scenario["enis"]}
        self.workdir: Optional[Path] = None
        self._dhcp = dhcp
        self._mtime_ns: Optional[int] = None
        self._guest_mtimes: dict[str, int] = {}
        # What the files say of a scenario (None: just what it holds): the cloud API
        # shows IP moves in metadata only after its lag (sim/cloudapi.py).
        self.view: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None

    @property
    def provider(self) -> str:
        """The cloud the SimVM's scenario simulates (``aws`` unless it says otherwise)."""
        return str(self.scenario.get("provider", "aws"))

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise SimVMError("the SimVM is not started")
        return self.workdir

    @property
    def scenario_path(self) -> Path:
        return self._dir / "scenario.json"

    @property
    def static_path(self) -> Path:
        return self._dir / "enis.toml"

    def guest_path(self, g: Guest) -> Path:
        return self._dir / f"scenario-{g.name}.json"

    # ---- reading

    def all(self) -> list[dict[str, Any]]:
        """The metadata of every VM: the SimVM's own, then that of guests that have their own."""
        return [self.scenario] + [g.scenario for g in self.guests if g.scenario is not None]

    def of(self, g: Guest) -> dict[str, Any]:
        return g.scenario if g.scenario is not None else self.scenario

    def eni(self, mac: str) -> dict[str, Any]:
        """An ENI listed by any VM, or one detached earlier (``KeyError`` if never seen)."""
        mac = mac.lower()
        for scn in self.all():
            for e in scn["enis"]:
                if e["mac"] == mac:
                    return e
        if mac in self.known:
            return self.known[mac]
        raise KeyError(f"no ENI with MAC {mac}")

    # ---- writing

    def _text(self, g: Optional[Guest]) -> str:
        scn = self.scenario if g is None else g.scenario
        if self.view is not None:  # the cloud API's metadata lag (sim/cloudapi.py)
            scn = self.view(scn)
        return json.dumps(scn, indent=2, sort_keys=True)

    def rewrite(self) -> None:
        """Write every VM's file again (the cloud API's lag for an IP move ended)."""
        self._write_main()
        for g in self.guests:
            if g.scenario is not None:
                self.write(g)

    def write(self, g: Optional[Guest] = None) -> None:
        """Write the file of ``g``'s metadata (default, or a guest without its own: the
        SimVM's); the simulator serving it notices the new mtime."""
        if g is None or g.scenario is None:
            self._write_main()
            return
        self._write_guest(g, self._text(g))

    def _write_guest(self, g: Guest, text: str) -> None:
        path = self.guest_path(g)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        # the simulator reloads on an mtime change: make sure there is one
        mtime = max(os.stat(path).st_mtime_ns, self._guest_mtimes.get(g.name, 0) + 1_000_000)
        os.utime(path, ns=(mtime, mtime))
        self._guest_mtimes[g.name] = mtime

    def _write_main(self) -> None:
        """Replace the scenario file atomically and make sure its mtime changes.

        The simulator reloads on an mtime change; two writes within the filesystem's timestamp
        granularity would otherwise look like one, so the mtime is bumped when needed.
        """
        if self.workdir is None:
            return
        path = self.scenario_path
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self._text(None))
        os.replace(tmp, path)
        mtime = os.stat(path).st_mtime_ns
        if self._mtime_ns is not None and mtime <= self._mtime_ns:
            mtime = self._mtime_ns + 1_000_000_000
            os.utime(path, ns=(mtime, mtime))
        self._mtime_ns = mtime
        if self.provider in ("static", "jdcloud"):
            self._write_static()

    def _write_static(self) -> None:
        """The static ENI file follows the scenario as metadata would (a scenario the simulator
        would refuse leaves the file as it was: tests write broken files themselves)."""
        try:
            parsed = parse_scenario(self.scenario)
        except ValueError:
            return
        jd = self.provider == "jdcloud"
        text = render_static(parsed, overlay=jd, subnets=not (jd and self._dhcp))
        tmp = self.static_path.with_name(self.static_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.static_path)

    # ---- changing what the cloud says

    def replace(self, scenario: Mapping[str, Any]) -> None:
        """The SimVM's whole scenario changes (and is written)."""
        self.scenario = normalise(scenario)
        for e in self.scenario["enis"]:
            self.known[e["mac"]] = e
        self._write_main()

    def set_control(self, control: Mapping[str, Any]) -> None:
        self.scenario.setdefault("control", {}).update(control)
        self._write_main()

    def add_eni(self, eni: Mapping[str, Any]) -> dict[str, Any]:
        """A new ENI in the SimVM's scenario; returns it normalised."""
        e = normalise({"enis": [dict(eni)]})["enis"][0]
        if any(x["mac"] == e["mac"] for x in self.scenario["enis"]):
            raise SimVMError(f"the scenario already has an ENI with MAC {e['mac']}")
        self.scenario["enis"].append(e)
        self.known[e["mac"]] = e
        self._write_main()
        return e

    def list_on(self, mac: str, g: Guest) -> None:
        """An attached ENI is listed in its VM's metadata (put back if it was detached)."""
        scn = self.of(g)
        if all(e["mac"] != mac for e in scn["enis"]):
            scn["enis"].append(self.eni(mac))
            self.write(g)

    def unlist(self, mac: str) -> None:
        """A detached ENI leaves the metadata of every VM."""
        self.scenario["enis"] = _without(self.scenario["enis"], mac)
        self._write_main()
        for g in self.guests:
            if g.scenario is not None and any(e["mac"] == mac for e in g.scenario["enis"]):
                g.scenario["enis"] = _without(g.scenario["enis"], mac)
                self.write(g)

    def move(self, mac: str, src: Guest, dst: Guest, device_number: Optional[int]) -> int:
        """A migrated ENI leaves ``src``'s metadata and joins ``dst``'s at ``device_number``
        (default: the lowest free one, from 1). Returns the device number."""
        eni = copy.deepcopy(self.eni(mac))
        src_scn, dst_scn = self.of(src), self.of(dst)
        if device_number is None:
            used = {int(e.get("device-number", 0)) for e in dst_scn["enis"]}
            device_number = min(set(range(1, len(used) + 2)) - used)
        eni["device-number"] = device_number
        src_scn["enis"] = _without(src_scn["enis"], mac)
        dst_scn["enis"] = _without(dst_scn["enis"], mac) + [eni]
        self.known[mac] = eni
        self.write(src)
        self.write(dst)
        return device_number

    def adopt(self, g: Guest, scenario: Mapping[str, Any], port: int) -> None:
        """``g`` (not yet among the guests) gets metadata of its own, served on ``port``."""
        g.scenario = normalise(scenario)
        g.metadata_port = port
        for e in g.scenario["enis"]:
            if any(e["mac"] == x["mac"] for scn in self.all() for x in scn["enis"]):
                raise SimVMError(f"ENI {e['mac']} is already listed for another VM")
            self.known[e["mac"]] = e
