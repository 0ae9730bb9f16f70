"""Businesses: the `[[business]]` tables of the configuration, parsed and checked.

A business names the ENI (MAC or id) or the IP that carries it, and the traffic that belongs
to it: destinations (CIDRs), a firewall mark (with a mask), uid ranges, an IP protocol with
destination ports.  eni-guest gives business number n (counting from 0 in file order) its own
rule priority and table (business_plan.py, docs/routing.md "Businesses"): one rule per
combination of its selectors (every kind it names must match, any value of a kind may), and
a table holding the ENI's routes with the business's IP as preferred source.

What can be judged without metadata is judged here, when the configuration is loaded: the
syntax of every value, a business that selects nothing, two businesses claiming the same
traffic (a rule of a later one that an earlier one's rule already takes entirely: the earlier
priority wins, so the later rule could never match).  Whether the IP belongs to the ENI is
checked once metadata is read (business_plan.check).  Errors are ConfigError (exit 2), one
line naming the table and the value: `config F: business[2] 'partner'.dports = [0]: ...`.
"""

from __future__ import annotations

import ipaddress
from itertools import product

from .errors import ConfigError
from .record import record
from .syntax import address, eni_ref, network

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    from typing import Any, Optional, Union

    IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

MAX_BUSINESSES = 256  # the size of the band of priorities and tables reserved for them
MAX_RULES = 256  # rules of one business (the product of its selectors' values)
MAX_UID = 2**32 - 2  # 4294967295 is (uid_t)-1, "no uid"
# IP protocols by name, as `ip rule ... ipproto` and the [[business]] tables write them
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTO_NAMES = {n: name for name, n in PROTO_NUMBERS.items()}
PORT_PROTOCOLS = frozenset({6, 17, 132})  # tcp, udp, sctp: the protocols with ports
KEYS = ("name", "eni", "ip", "destinations", "fwmark", "uids", "protocol", "dports")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _NAME_START | frozenset("._-")

if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    # One rule's selectors: (to, (mark, mask), (first uid, last uid), ipproto, (first, last port))
    Selector = tuple[
        Optional[IPNetwork],
        Optional[tuple[int, int]],
        Optional[tuple[int, int]],
        Optional[int],
        Optional[tuple[int, int]],
    ]


@record(frozen=True)
class Business:
    """One `[[business]]` table, syntax-checked and normalised."""

    name: str
    eni: Optional[str] = None  # a MAC (lower case) or an ENI id
    ip: Optional[str] = None  # the source its traffic gets, as ipaddress prints it
    destinations: tuple[str, ...] = ()  # normalised networks
    fwmark: Optional[tuple[int, int]] = None  # (mark, mask)
    uids: tuple[tuple[int, int], ...] = ()
    protocol: Optional[int] = None
    dports: tuple[tuple[int, int], ...] = ()
    where: str = ""  # "config FILE: business[2] 'partner'": how errors name it

    def families(self) -> tuple[int, ...]:
        """The address families it routes: its destinations', else its IP's, else both."""
        if self.destinations:
            return tuple(sorted({ipaddress.ip_network(d).version for d in self.destinations}))
        if self.ip is not None:
            return (ipaddress.ip_address(self.ip).version,)
        return (4, 6)

    def selectors(self, family: int) -> list[Selector]:
        """Its rules' selectors for one family: every combination of its values."""
        dsts: list[Optional[IPNetwork]] = [
            n for n in map(ipaddress.ip_network, self.destinations) if n.version == family
        ]
        if not self.destinations:
            dsts = [None]
        return list(
            product(
                dsts,
                [self.fwmark],
                list(self.uids) or [None],
                [self.protocol],
                list(self.dports) or [None],
            )
        )


def describe(sel: Selector) -> str:
    """A selector in `ip rule` words: 'to 203.0.113.0/24 ipproto tcp dport 443'."""
    dst, mark, uids, proto, ports = sel
    words = [f"to {dst}"] if dst is not None else []
    if mark is not None:
        words.append(f"fwmark {mark[0]:#x}/{mark[1]:#x}")
    if uids is not None:
        words.append(f"uidrange {uids[0]}-{uids[1]}")
    if proto is not None:
        words.append(f"ipproto {PROTO_NAMES.get(proto, proto)}")
    if ports is not None:
        words.append(f"dport {ports[0]}" + (f"-{ports[1]}" if ports[1] != ports[0] else ""))
    return " ".join(words)


def covers(a: Selector, b: Selector) -> bool:
    """Whether every packet rule `b` selects is also selected by rule `a`."""
    (adst, amark, auid, aproto, aport), (bdst, bmark, buid, bproto, bport) = a, b
    if adst is not None and (bdst is None or not bdst.subnet_of(adst)):  # type: ignore[arg-type]
        return False
    if amark is not None and amark != bmark:
        return False
    if aproto is not None and aproto != bproto:
        return False
    for ar, br in ((auid, buid), (aport, bport)):
        if ar is not None and (br is None or not ar[0] <= br[0] <= br[1] <= ar[1]):
            return False
    return True


def coerce_businesses(value: Any, source: str) -> tuple[Business, ...]:
    """The [[business]] tables; errors name a table as business[N] 'NAME', N from 1."""
    if source.startswith("environment"):
        raise ConfigError(f"{source}: business: [[business]] tables can only be in the file")
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{source}: business = {value!r}: must be [[business]] tables")
    if len(value) > MAX_BUSINESSES:
        raise ConfigError(f"{source}: business: {len(value)} tables, at most {MAX_BUSINESSES}")
    out: list[Business] = []
    for n, table in enumerate(value, 1):
        b = _business(f"{source}: business[{n}]", table)
        for m, other in enumerate(out, 1):
            if other.name == b.name:
                raise ConfigError(f"{b.where}.name: business[{m}] has the same name")
            _not_taken(b, other, m)
        out.append(b)
    return tuple(out)


def _not_taken(b: Business, earlier: Business, m: int) -> None:
    """No rule of `b` may select only traffic that a rule of an earlier business takes."""
    for fam in set(b.families()) & set(earlier.families()):
        for sel in b.selectors(fam):
            for other in earlier.selectors(fam):
                if covers(other, sel):
                    raise ConfigError(
                        f"{b.where}: '{describe(sel)}' is already taken by business[{m}] "
                        f"{earlier.name!r} ('{describe(other)}'), whose rules come first: "
                        "no two businesses may claim the same traffic"
                    )


def _good_name(name: str) -> bool:
    """1-64 letters, digits, '.', '_' or '-', the first a letter or digit (no `re`: ~0.1 ms
    a start to compile)."""
    return 0 < len(name) <= 64 and name[0] in _NAME_START and all(c in _NAME_CHARS for c in name)


def _business(where: str, table: dict[str, Any]) -> Business:
    """One [[business]] table, syntax-checked; `where` starts every error."""
    name = table.get("name")
    if not isinstance(name, str) or not _good_name(name):
        raise ConfigError(
            f"{where}.name = {name!r}: must be 1-64 letters, digits, '.', '_' or '-'"
            if name is not None
            else f"{where}.name: missing (every business needs a name)"
        )
    where = f"{where} {name!r}"
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)})")

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}.{key} = {table[key]!r}: {why}")

    eni = ip = None
    if "eni" in table:
        eni, why = eni_ref(table["eni"]) if isinstance(table["eni"], str) else (None, "")
        if eni is None:
            raise bad("eni", why or "must be the ENI's MAC or id")
    if "ip" in table:
        text = table["ip"]
        ip = (address(text, 4) or address(text, 6)) if isinstance(text, str) else None
        if ip is None:
            raise bad("ip", "not a unicast IPv4 or IPv6 address")
    if eni is None and ip is None:
        raise ConfigError(f"{where}: names no carrier: give eni (MAC or id), ip, or both")
    b = Business(
        name,
        eni,
        ip,
        _destinations(table, bad),
        _fwmark(table, bad),
        tuple(_ranges(table, "uids", 0, MAX_UID, bad)),
        _protocol(table, bad),
        tuple(_ranges(table, "dports", 1, 65535, bad)),
        where,
    )
    _consistent(b, table, bad)
    return b


def _consistent(b: Business, table: dict[str, Any], bad: Any) -> None:
    """What the values mean together: ports need a protocol with ports, something must be
    selected, the IP's family must be the destinations', and not too many rules."""
    if b.dports and b.protocol not in PORT_PROTOCOLS:
        raise bad("dports", "ports need protocol = 'tcp', 'udp' or 'sctp'")
    if not (b.destinations or b.fwmark or b.uids or b.protocol is not None):
        raise ConfigError(
            f"{b.where}: selects no traffic: give destinations, fwmark, uids or protocol "
            "(a business taking every unbound socket would replace the main table)"
        )
    if b.ip is not None:
        version = ipaddress.ip_address(b.ip).version
        other = [d for d in b.destinations if ipaddress.ip_network(d).version != version]
        if other:
            raise bad(
                "destinations",
                f"{other[0]!r} is not IPv{version} like ip {b.ip!r}: one business, one source",
            )
    count = sum(len(b.selectors(f)) for f in b.families())
    if count > MAX_RULES:
        raise ConfigError(f"{b.where}: {count} rules (the product of its values), most {MAX_RULES}")


def _destinations(table: dict[str, Any], bad: Any) -> tuple[str, ...]:
    items = table.get("destinations", [])
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise bad("destinations", "must be a list of networks in CIDR form")
    out: list[str] = []
    for item in items:
        net, why = network(item)
        if net is None:
            raise bad("destinations", f"{item!r} is {why}")
        if net not in out:
            out.append(net)
    return tuple(out)


def _number(value: Any) -> Optional[int]:
    """An integer from TOML (17) or a string ("17", "0x11"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None


def _fwmark(table: dict[str, Any], bad: Any) -> Optional[tuple[int, int]]:
    """fwmark = 16, "0x10" or "0x10/0xff" -> (mark, mask); the mask defaults to every bit."""
    if "fwmark" not in table:
        return None
    value = table["fwmark"]
    mark_text, _, mask_text = value.partition("/") if isinstance(value, str) else (value, "", "")
    mark = _number(mark_text)
    mask = _number(mask_text) if mask_text else 0xFFFFFFFF
    if mark is None or mask is None or not (1 <= mark <= 0xFFFFFFFF and 1 <= mask <= 0xFFFFFFFF):
        raise bad("fwmark", "must be a mark 1..0xffffffff, optionally /MASK ('0x10/0xff')")
    if mark & ~mask:
        raise bad("fwmark", f"the mark has bits outside the mask {mask:#x}")
    return mark, mask


def _protocol(table: dict[str, Any], bad: Any) -> Optional[int]:
    if "protocol" not in table:
        return None
    value = table["protocol"]
    if isinstance(value, str) and value.strip().lower() in PROTO_NUMBERS:
        return PROTO_NUMBERS[value.strip().lower()]
    number = _number(value)
    if number is None or not 1 <= number <= 255:
        raise bad("protocol", "must be 'tcp', 'udp', 'sctp' or a protocol number 1..255")
    return number


def _ranges(table: dict[str, Any], key: str, low: int, high: int, bad: Any) -> list:
    """uids / dports: a list of numbers and "FIRST-LAST" ranges, each within low..high."""
    items = table.get(key, [])
    if not isinstance(items, list):
        raise bad(key, "must be a list of numbers or 'FIRST-LAST' ranges")
    out: list[tuple[int, int]] = []
    for item in items:
        first_text, _, last_text = item.partition("-") if isinstance(item, str) else (item, "", "")
        first, last = _number(first_text), _number(last_text) if last_text else _number(first_text)
        if first is None or last is None:
            raise bad(key, f"{item!r} is not a number or a 'FIRST-LAST' range")
        if not (low <= first <= high and low <= last <= high):
            raise bad(key, f"{item!r} is outside {low}..{high}")
        if first > last:
            raise bad(key, f"{item!r} is not ordered: {first} > {last}")
        if (first, last) not in out:
            out.append((first, last))
    return out


def check_settings(businesses: tuple[Business, ...], config: Any) -> None:
    """What businesses ask of the other settings: no excluded carrier, and a band of
    priorities and tables that fits (config.Config.validate calls this)."""
    from .business_plan import priority_band, table_band

    excluded = [ipaddress.ip_network(n) for n in config.exclude_ips]
    for b in businesses:
        if b.eni is not None and b.eni in config.exclude_enis:
            raise ConfigError(f"{b.where}.eni = {b.eni!r}: also in exclude_enis")
        net = next(
            (n for n in excluded if b.ip is not None and ipaddress.ip_address(b.ip) in n), None
        )
        if net is not None:
            raise ConfigError(f"{b.where}.ip = {b.ip!r}: also excluded by exclude_ips {str(net)!r}")
    if not businesses:
        return
    prio, tables = priority_band(config), table_band(config)
    last_prio, last_table = prio.start + len(businesses) - 1, tables.start + len(businesses) - 1
    if last_prio >= 32766:
        raise ConfigError(
            f"config priority_base = {config.priority_base}: the businesses' rules would need "
            f"priorities up to {last_prio}, after main's 32766"
        )
    if last_table > 2**32 - 1:
        raise ConfigError(
            f"config table_base = {config.table_base}: the businesses' tables would need "
            f"numbers up to {last_table}, past 4294967295"
        )
