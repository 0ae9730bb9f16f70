"""`eni-guest show`: what is excluded by the configuration is shown, and marked as such."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network

from eni_guest.agent import Result
from eni_guest.config import Config
from eni_guest.model import Eni, Excluded, Instance, Unsettled
from eni_guest.plan import plan
from eni_guest.show import SCHEMA_VERSION, render_json, render_text
from eni_guest.state import KernelState, Link
from eni_guest_lab.json_schema import load_show_schema, problems

MAC1, MAC2, MAC3 = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"
STATE = KernelState(
    links=(
        Link(2, "eth0", MAC1, 0, True, 9001),
        Link(3, "eth1", MAC2, 0, False, 1500),
        Link(4, "eth2", MAC3, 0, False, 1500),
    )
)


def eni(mac: str, device: int, ips: list[str], **kw: object) -> Eni:
    return Eni(
        mac,
        f"eni-{device}",
        device,
        0,
        device == 0,
        tuple(ip_address(a) for a in ips),
        (ip_network("10.0.1.0/24"),),
        ip_address("10.0.1.1"),
        **kw,  # type: ignore[arg-type]
    )


def result(config: Config) -> Result:
    primary = eni(MAC1, 0, ["10.0.1.10"], excluded_ips=(ip_address("10.0.1.99"),))
    instance = Instance(
        "aws",
        "i-1",
        MAC1,
        (primary, eni(MAC2, 1, ["10.0.1.20"])),
        excluded=(
            Excluded(MAC3, "eni-2", "exclude_enis 'eni-2'", (ip_address("10.0.1.30"),), (), 2),
        ),
        excluded_ips=(ip_network("10.0.1.96/30"),),
    )
    return Result(instance, plan(instance, config, STATE), STATE)


def test_json_marks_excluded_enis_and_ips() -> None:
    doc = json.loads(render_json(result(Config(exclude_interfaces=("eth1",)))))
    rows = {r["mac"]: r for r in doc["enis"]}
    assert rows[MAC1]["excluded"] is None and rows[MAC1]["in_sync"] is False
    assert rows[MAC1]["ips"] == [
        {"ip": "10.0.1.10", "elastic_ip": None, "excluded": False},
        {"ip": "10.0.1.99", "elastic_ip": None, "excluded": True},
    ]
    assert rows[MAC2]["excluded"] == "interface eth1 matches exclude_interfaces 'eth1'"
    assert rows[MAC2]["in_sync"] is None and rows[MAC2]["interface"] == "eth1"
    assert rows[MAC3]["excluded"] == "exclude_enis 'eni-2'"
    assert (rows[MAC3]["interface"], rows[MAC3]["table"], rows[MAC3]["in_sync"]) == (
        "eth2",
        10002,
        None,
    )
    assert rows[MAC3]["ips"] == [{"ip": "10.0.1.30", "elastic_ip": None, "excluded": True}]
    assert doc["excluded_ips"] == ["10.0.1.96/30"]


def test_text_marks_excluded_enis_and_ips() -> None:
    text = render_text(result(Config(exclude_interfaces=("eth1",))))
    lines = text.splitlines()
    row = {line.split()[0]: line for line in lines[1:4]}
    assert "10.0.1.99 (excluded)" in row["eth0"] and " no " in row["eth0"]
    assert " excluded " in row["eth1"] and " excluded " in row["eth2"]
    assert "excluded: eni-1 (0e:00:00:00:00:02): interface eth1 matches" in text
    assert "excluded: eni-2 (0e:00:00:00:00:03): exclude_enis 'eni-2'" in text
    assert "excluded IPs (exclude_ips): 10.0.1.96/30" in text
    assert "note:" not in text  # the exclusions have their own lines


def test_nothing_excluded_shows_as_before() -> None:
    instance = Instance("aws", "i-1", MAC1, (eni(MAC1, 0, ["10.0.1.10"]),))
    res = Result(instance, plan(instance, Config(), STATE), STATE)
    assert "excluded" not in render_text(res)
    (row,) = json.loads(render_json(res))["enis"]
    assert row["excluded"] is None and row["in_sync"] is False


# ---------------------------------------------------------------- the --json schema


def test_json_follows_its_documented_schema() -> None:
    """docs/show.schema.json lists every key of this schema_version, with its type."""
    schema = load_show_schema()
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION == 1
    unsettled = Instance(
        "jdcloud",
        "i-1",
        MAC1,
        (eni(MAC1, 0, ["10.0.1.10"], mtu=9001), eni(MAC2, 1, ["10.0.1.20"])),
        unsettled=(Unsettled(MAC3, "no local-ipv4 yet"),),
        invalid=(Excluded(MAC3, "eni-2", "metadata x = 'y': not an address", (), (), 2),),
        chosen_because="metadata probe: JD Cloud's listing",
    )
    for res in (
        result(Config(exclude_interfaces=("eth1",))),
        result(Config()),
        Result(unsettled, plan(unsettled, Config(), STATE), STATE),
    ):
        doc = json.loads(render_json(res))
        assert problems(doc, schema) == []
    doc["enis"][0]["mtu"] = 1.5
    doc["enis"][1]["new_key"] = True
    del doc["notes"]
    assert problems(doc, schema) == [
        "$: 'notes' missing",
        "$.enis[0].mtu: 1.5 is not of type integer/null",
        "$.enis[1]: 'new_key' is not in the schema",
    ]
