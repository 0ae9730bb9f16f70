"""The simulated cloud's API: move private IPs and ENIs between VMs, as a keepalived notify
script does on a real cloud (docs/ha.md has the curl examples).

What the real calls are, and what each does here:

* `POST /assign-private-ip`: AWS `ec2 assign-private-ip-addresses --allow-reassignment`,
  Alibaba `AssignPrivateIpAddresses` (after `UnassignPrivateIpAddresses` on the old ENI),
  Tencent `MigratePrivateIpAddress`;
* `POST /unassign-private-ip`: `unassign-private-ip-addresses`, `UnassignPrivateIpAddresses`;
* `POST /detach-eni`, `POST /attach-eni`: `detach-network-interface` and
  `attach-network-interface`, `DetachNetworkInterface` and `AttachNetworkInterface`;
* `GET /enis`: what the cloud routes now (`describe-network-interfaces`).

Parameters come as a JSON body or as query parameters: `eni` (the ENI's id or MAC), `ip`,
`allow_reassignment` (1/true), `instance` (an instance id), `device_number`.  The answer is
JSON: `{"ok": true, ...}`, or `{"error": ...}` with 400 (bad request), 404 (no such ENI or
instance) or 409 (the IP is another ENI's and reassignment was not allowed, or it is an ENI's
primary IP).

The VPC follows at once: the IP is routed to its new ENI (and passes the source check there
only) before the answer is sent; an ENI's link leaves or appears in its VM at once.  Metadata
follows after `lag` seconds, as on a real cloud: an IP's old ENI is still listed with it for
that long, and the new one without it.  An attached ENI is listed at once but, for `lag`
seconds, the way AWS lists a just-attached ENI (device-number 0, no IPs: the simulator's
per-ENI `lag`); a detached one is no longer listed at once.  The server is a thread of the
process that owns the SimVM, listening inside the VPC namespace on the metadata address, port
CLOUD_API_PORT: every VM reaches it through its primary ENI, as it reaches metadata.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ..nssocket import tcp_listener
from ..topology.addresses import METADATA_V4

if TYPE_CHECKING:
    from ..topology.guests import Guest
    from ..vm import SimVM

CLOUD_API_PORT = 9001


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class CloudApi:
    """The API of one SimVM's cloud.  `lag`: seconds until metadata follows a change."""

    def __init__(self, vm: SimVM, *, lag: float = 0.0, port: int = CLOUD_API_PORT) -> None:
        self.vm = vm
        self.lag = lag
        self.port = port
        self.url = f"http://{METADATA_V4}:{port}"
        self.calls: list[dict[str, Any]] = []  # every call: what, when routed, when in metadata
        self._lock = threading.RLock()
        # IP moves metadata does not show yet: (due, key, ip, new owner, old owners)
        self._pending: list[_Move] = []
        self._wake = threading.Condition(self._lock)
        self._closed = False
        vm._md.view = self._lagging
        sock = tcp_listener(vm.vpc_ns, METADATA_V4, port)
        self._server = ThreadingHTTPServer((METADATA_V4, port), _handler(self), False)
        self._server.socket.close()
        self._server.socket = sock
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="cloudapi", daemon=True),
            threading.Thread(target=self._write_later, name="cloudapi-md", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            self._closed = True
            self._pending.clear()
            self.vm._md.view = None
            self._wake.notify()

    # ---- the operations (also callable directly from Python)

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one operation; raises ApiError.  Metadata follows after the lag."""
        ops = {
            "assign-private-ip": self._assign,
            "unassign-private-ip": self._unassign,
            "detach-eni": self._detach,
            "attach-eni": self._attach,
            "enis": lambda a: {"enis": self._enis()},
        }
        if op not in ops:
            raise ApiError(404, f"no operation {op!r} (known: {', '.join(ops)})")
        with self._lock:
            out = ops[op](args)
            routed = time.time()
            if op != "enis":
                record = {"op": op, "args": dict(args), "routed_at": routed}
                lag = self.lag if op != "detach-eni" else 0.0
                record["metadata_at"] = routed + lag
                self.calls.append(record)
                out = {**out, "routed_at": routed, "metadata_at": record["metadata_at"]}
        return {"ok": True, **out}

    def _lagging(self, scn: dict[str, Any]) -> dict[str, Any]:
        """What metadata shows of a scenario: the IP moves of the last `lag` seconds undone."""
        moves = [m for m in self._pending if m.due > time.monotonic()]
        if not moves:
            return scn
        scn = copy.deepcopy(scn)
        for m in moves:
            for e in scn["enis"]:
                if e["mac"] == m.new:
                    e[m.key] = [x for x in _ips(e, m.key) if x != m.ip]
                elif e["mac"] in m.old and m.ip not in _ips(e, m.key):
                    e[m.key] = _ips(e, m.key) + [m.ip]
        return scn

    def _write_later(self) -> None:
        """Rewrite the metadata files whenever an IP move's lag ends."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                due = [m for m in self._pending if m.due <= now]
                if due:
                    self._pending = [m for m in self._pending if m.due > now]
                    self.vm._md.rewrite()
                    continue
                left = min((m.due for m in self._pending), default=now + 3600) - now
                self._wake.wait(left)

    def _mac(self, args: dict[str, Any]) -> str:
        ref = str(args.get("eni", "")).strip().lower()
        if not ref:
            raise ApiError(400, "missing eni (its id or MAC)")
        for mac, e in self.vm._md.known.items():
            if ref in (mac, str(e.get("interface-id", "")).lower()):
                return mac
        raise ApiError(404, f"no ENI {ref}")

    def _records(self, mac: str) -> list[dict[str, Any]]:
        """Every dict that describes this ENI (a scenario's and the remembered one)."""
        found = [e for scn in self.vm._md.all() for e in scn["enis"] if e["mac"] == mac]
        found.append(self.vm._md.known[mac])
        unique: dict[int, dict[str, Any]] = {id(e): e for e in found}
        return list(unique.values())

    @staticmethod
    def _ip(args: dict[str, Any]) -> tuple[str, str]:
        try:
            ip = ipaddress.ip_address(str(args.get("ip", "")).strip())
        except ValueError:
            raise ApiError(400, f"not an IP address: {args.get('ip')!r}") from None
        return str(ip), "local-ipv4s" if ip.version == 4 else "ipv6s"

    def _assign(self, args: dict[str, Any]) -> dict[str, Any]:
        mac = self._mac(args)
        ip, key = self._ip(args)
        owners = {e["mac"] for e in self._all_records() if ip in _ips(e, key)} - {mac}
        for owner in owners:
            if not _truthy(args.get("allow_reassignment", False)):
                raise ApiError(409, f"{ip} is assigned to {owner}: allow_reassignment not set")
            for e in self._records(owner):
                if _ips(e, key)[:1] == [ip] and key == "local-ipv4s":
                    raise ApiError(409, f"{ip} is the primary IP of {owner}")
        for owner in owners:
            for e in self._records(owner):
                e[key] = [x for x in _ips(e, key) if x != ip]
        for e in self._records(mac):
            if ip not in _ips(e, key):
                e[key] = _ips(e, key) + [ip]
        self._changed(_Move(time.monotonic() + self.lag, key, ip, mac, frozenset(owners)))
        return {"eni": mac, "ip": ip, "moved_from": sorted(owners)}

    def _unassign(self, args: dict[str, Any]) -> dict[str, Any]:
        mac = self._mac(args)
        ip, key = self._ip(args)
        for e in self._records(mac):
            if _ips(e, key)[:1] == [ip] and key == "local-ipv4s":
                raise ApiError(409, f"{ip} is the primary IP of {mac}")
            e[key] = [x for x in _ips(e, key) if x != ip]
        self._changed(_Move(time.monotonic() + self.lag, key, ip, "", frozenset({mac})))
        return {"eni": mac, "ip": ip}

    def _detach(self, args: dict[str, Any]) -> dict[str, Any]:
        mac = self._mac(args)
        port = self.vm._vpc.ports.get(mac)
        if port is None or port.guest is None:
            raise ApiError(409, f"ENI {mac} is not attached")
        self.vm.detach(mac)
        return {"eni": mac}

    def _attach(self, args: dict[str, Any]) -> dict[str, Any]:
        mac = self._mac(args)
        g = self._guest(str(args.get("instance", "")))
        port = self.vm._vpc.ports.get(mac)
        if port is not None and port.guest is not None:
            raise ApiError(409, f"ENI {mac} is attached to {port.guest.name}: detach it first")
        used = {int(e.get("device-number", 0)) for e in self.vm._md.of(g)["enis"]}
        number = args.get("device_number")
        number = int(number) if number not in (None, "") else min(set(range(1, 64)) - used)
        if number in used:
            raise ApiError(409, f"device number {number} is in use on {g.name}")
        for e in self._records(mac):
            e["device-number"] = number
            e["lag"] = self.lag  # listed at once, but device-number 0 and no IPs for the lag
        name = self.vm.attach(mac, f"eth{number}", guest=g)
        return {"eni": mac, "instance": self._instance_id(g), "ifname": name}

    def _guest(self, instance: str) -> Guest:
        for g in self.vm.guests:
            if instance in (self._instance_id(g), g.name):
                return g
        raise ApiError(404, f"no instance {instance!r}")

    def _instance_id(self, g: Guest) -> str:
        return str(self.vm._md.of(g).get("instance_id", "i-0123456789abcdef0"))

    def _all_records(self) -> list[dict[str, Any]]:
        return [e for scn in self.vm._md.all() for e in scn["enis"]]

    def _enis(self) -> list[dict[str, Any]]:
        out = []
        for mac, e in sorted(self.vm._md.known.items()):
            port = self.vm._vpc.ports.get(mac)
            g = port.guest if port is not None else None
            out.append(
                {
                    "mac": mac,
                    "id": e.get("interface-id"),
                    "instance": self._instance_id(g) if g is not None else None,
                    "ifname": port.ifname if port is not None else None,
                    "device_number": e.get("device-number"),
                    "ipv4s": _ips(e, "local-ipv4s"),
                    "ipv6s": _ips(e, "ipv6s"),
                }
            )
        return out

    def _changed(self, move: _Move) -> None:
        """The VPC routes the new owner at once; metadata shows the move after the lag."""
        self._pending.append(move)
        self._wake.notify()
        self.vm._md.rewrite()  # unchanged to a reader until the lag ends (`_lagging`)
        self.vm._sync()


@dataclass(frozen=True)
class _Move:
    """An IP assigned to `new` ("" when only unassigned), taken from `old`; metadata shows it
    from `due` (time.monotonic) on."""

    due: float
    key: str  # "local-ipv4s" or "ipv6s"
    ip: str
    new: str
    old: frozenset[str]


def _ips(e: dict[str, Any], key: str) -> list[str]:
    value = e.get(key) or []
    return [value] if isinstance(value, str) else list(value)


def _handler(api: CloudApi) -> type:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            args: dict[str, Any] = dict(parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if length:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise ApiError(400, "the body must be a JSON object")
                    args.update(body)
                out, status = api.call(url.path.strip("/"), args), 200
            except ApiError as e:
                out, status = {"error": str(e)}, e.status
            except ValueError as e:
                out, status = {"error": f"bad request: {e}"}, 400
            data = (json.dumps(out) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
