"""`eni-guest show`: what metadata says per ENI, and whether the kernel already matches it.

It also says which cloud's metadata was read and why: with `--provider auto` (the default) a
wrong guess would explain everything else being wrong, so the reason is printed, not hidden.
What the configuration excludes is shown too, marked as such: an ENI or IP that eni-guest
leaves alone must not look like one it failed to configure.  And an ENI whose routing is all
in place but one of whose IPs' traffic someone else's rule takes first (capture.py) is not
"in sync": SYNC says "captured", and a line below names the rule.  A main-table route through
an ENI that its table holds a copy of (mirror.py) has a line of its own too.  The businesses
(`[[business]]` tables) come last, one line each: interface, source, table, priority, in sync
or not, or `waiting:` and why.
"""

from __future__ import annotations

import json

from . import business_plan
from .agent import Result
from .plan import ExcludedPlan
from .providers.boot_cache import EARLIER


def rows(result: Result) -> list[dict]:
    """One row per listed ENI, excluded ones included (`excluded` says why, else None)."""
    out = []
    for ep in result.plan.enis:
        eni = ep.eni
        managed = ep.excluded is None
        captured = result.plan.captured(eni.mac) if managed else []
        out.append(
            {
                "interface": ep.link.name if ep.link else None,
                "mac": eni.mac,
                "eni_id": eni.eni_id,
                "primary": eni.primary,
                "device_number": eni.device_number,
                "network_card": eni.network_card,
                # clouds without device numbers: the table slot comes from the MAC
                "slot": eni.slot,
                "slot_from_mac": eni.table_slot is not None,
                "ips": [
                    {
                        "ip": str(ip),
                        "elastic_ip": str(eip) if (eip := eni.elastic_ip(ip)) else None,
                        "excluded": False,
                    }
                    for ip in eni.ips
                ]
                + [
                    {"ip": str(ip), "elastic_ip": None, "excluded": True} for ip in eni.excluded_ips
                ],
                "prefixes": [str(p) for p in eni.prefixes],
                "mtu": eni.mtu,  # its [[eni]] table's or metadata's; None: the global or none
                "table": ep.table,
                "priority": ep.priority,
                # None for an ENI left alone: there is nothing it should be in sync with;
                # False while a foreign rule takes an IP's traffic first (`captured` says so)
                "in_sync": (ep.link is not None and result.plan.in_sync(eni.mac) and not captured)
                if managed
                else None,
                "captured": captured,
                # main-table routes through this ENI that its table holds a copy of (mirror.py)
                "mirrored_routes": [m.describe() for m in result.plan.mirrors if m.mac == eni.mac],
                "excluded": ep.excluded,
                "invalid": None,
            }
        )
    out += [_excluded_row(xp, result) for xp in result.plan.excluded]
    return out


def _excluded_row(xp: ExcludedPlan, result: Result) -> dict:
    """The row of an ENI the configuration excludes, or whose metadata was refused."""
    x = xp.excluded
    return {
        "interface": xp.link.name if xp.link else None,
        "mac": x.mac,
        "eni_id": x.eni_id or None,
        "primary": x.mac == result.instance.primary_mac,
        "device_number": None,
        "network_card": None,
        "slot": x.slot,
        "slot_from_mac": False,
        "ips": [{"ip": str(ip), "elastic_ip": None, "excluded": True} for ip in x.ips],
        "prefixes": [str(p) for p in x.prefixes],
        "mtu": None,
        "table": xp.table,
        "priority": None,
        "in_sync": None,
        "captured": [],
        "mirrored_routes": [],
        # a refused ENI is not excluded: its metadata is wrong, and it is left as it is
        "excluded": None if xp.invalid else x.reason,
        "invalid": x.reason if xp.invalid else None,
    }


def provider_line(result: Result) -> str:
    """`aws (set in the configuration)`, `alibaba (auto-detected: DMI sys_vendor ...)`, or
    `aws (auto-detected earlier this boot: metadata probe: ...)` for the answer kept for the
    boot (providers/boot_cache.py)."""
    why = result.instance.chosen_because
    if not why:
        how = "set in the configuration"
    elif why.startswith(EARLIER):
        how = f"auto-detected {why}"
    else:
        how = f"auto-detected: {why}"
    return f"{result.instance.provider} ({how})"


# The version of `show --json`'s format (docs/show.schema.json): raised when a key is removed
# or renamed or changes its meaning; a key added keeps it.
SCHEMA_VERSION = 1


def render_json(result: Result) -> str:
    why = result.instance.chosen_because
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "provider": result.instance.provider,
            "provider_chosen_by": "auto" if why else "configuration",
            "provider_chosen_because": why,
            "enis": rows(result),
            "unsettled": [{"mac": u.mac, "reason": u.reason} for u in result.instance.unsettled],
            "excluded_ips": [str(n) for n in result.instance.excluded_ips],
            "businesses": business_plan.rows(result.plan),
            "notes": list(result.plan.notes),
        },
        indent=2,
    )


def _below(r: dict) -> list[str]:
    """The lines below the table for one ENI's row: why it is left alone, what captures its
    IPs, the main-table routes its table holds a copy of."""
    out, eni = [], f"{r['eni_id'] or r['mac']} ({r['mac']})"
    if r["excluded"]:
        out.append(f"excluded: {eni}: {r['excluded']}")
    if r["invalid"]:
        out.append(f"invalid: {eni}: {r['invalid']}")
    out += [f"captured: {eni}: {why}" for why in r["captured"]]
    for route in r["mirrored_routes"]:
        out.append(f"main-table route mirrored into table {r['table']}: {route}")
    return out


def render_text(result: Result) -> str:
    header = ("IFACE", "MAC", "ENI", "DEV", "TABLE", "SYNC", "IPS (-> ELASTIC IP)")
    lines = []
    for r in rows(result):
        ips = ", ".join(
            i["ip"]
            + (f" -> {i['elastic_ip']}" if i["elastic_ip"] else "")
            + (" (excluded)" if i["excluded"] and not r["excluded"] else "")
            for i in r["ips"]
        )
        if r["prefixes"]:
            ips += " prefixes " + ", ".join(r["prefixes"])
        dev = f"{r['device_number']}" + (f"/card{r['network_card']}" if r["network_card"] else "")
        if r["slot_from_mac"] or r["device_number"] is None:
            dev = "-"  # the cloud publishes none; TABLE comes from the MAC
        sync = "yes" if r["in_sync"] else "no"
        if r["excluded"]:
            sync = "excluded"  # left alone: neither configured nor removed
        if r["invalid"]:
            sync = "invalid"  # its metadata was refused: left exactly as it is
        if r["captured"] and result.plan.in_sync(r["mac"]):
            sync = "captured"  # configured, but a foreign rule takes an IP's traffic first
        lines.append(
            (
                (r["interface"] or "-") + (" *" if r["primary"] else ""),
                r["mac"],
                r["eni_id"] or "-",
                dev,
                "-" if r["table"] is None else str(r["table"]),
                sync,
                ips,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *lines]
    ]
    out.append(f"provider: {provider_line(result)}   * = primary ENI")
    for u in result.instance.unsettled:
        out.append(f"not settled: {u.mac}: {u.reason}")
    for r in rows(result):
        out += _below(r)
    if result.instance.excluded_ips:
        nets = ", ".join(str(n) for n in result.instance.excluded_ips)
        out.append(f"excluded IPs (exclude_ips): {nets}")
    shown = (
        "not settled",
        "not configured yet",
        ": excluded by ",
        "matches exclude_interfaces",
        ": left as it is: ",
    )
    for note in result.plan.notes:
        if not any(s in note for s in shown):  # those have their own lines above
            out.append(f"note: {note}")
    return "\n".join([*out, *business_plan.lines(result.plan)])
