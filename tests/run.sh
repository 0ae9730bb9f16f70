#!/usr/bin/env bash
# The project's test command (README "Set up").  Run as root on a fresh Debian-like machine:
# installs what the tests need, runs ruff, the unit tests (also on Python 3.9 when pyenv has
# it), the end-to-end tests on simulated VMs, builds the Debian package (lintian clean), then
# the real-VM tests (Debian guests under QEMU, the package in one of them, and README's set-up
# commands in a fresh Debian root: tests/realvm), and fails if any test was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the end-to-end tests build network namespaces: run as root" >&2
    exit 2
fi

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v sysctl >/dev/null || need_apt+=(procps)
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)  # JD Cloud's VPC DHCP in the e2e tests
command -v keepalived >/dev/null || need_apt+=(keepalived)  # the failover tests (test_ha.py)
command -v curl >/dev/null || need_apt+=(curl)  # their notify scripts call the cloud API
# udevadm test (the udev rule), systemd-analyze verify/security (the units), and the real
# cloud-init on the distro's Python (the cloud-init module).
command -v udevadm >/dev/null || need_apt+=(udev)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
/usr/bin/python3 -c 'import cloudinit' 2>/dev/null || need_apt+=(cloud-init)
# The real-VM tests (tests/realvm): QEMU (software emulation), its disk tool, and what builds
# the Debian guest images.
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
# The Debian package (debian/, tools/build-deb.sh): dpkg-buildpackage with its build
# dependencies (build-essential: dpkg-checkbuilddeps requires it), and lintian.
for pkg in build-essential debhelper dh-python pybuild-plugin-pyproject python3-all \
    python3-setuptools python3-jinja2 lintian; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Installing udev or systemd must not start daemons here (udevd would re-trigger every
    # device of the machine): policy-rc.d 101 forbids it for the time of the install.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
fi

PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'

# In the background while the other tests run, for the real-VM tests, which wait for it: the
# Debian package (dpkg-buildpackage -us -uc -b, then lintian: any error or warning fails),
# then the guest images and the fresh root (debootstrap, ~5 min each when the cache is cold).
build_log=$(mktemp --suffix=.log)
deb_dir=$(mktemp -d)
{ bash tools/build-deb.sh "$deb_dir" && "$PY" -m eni_guest_lab.realvm build; } >"$build_log" 2>&1 &
build_pid=$!

"$PY" -m ruff check src tests benchmarks cloud-init
"$PY" -m ruff format --check src tests benchmarks cloud-init

# Oldest supported Python: unit tests only (the e2e tests exercise the same code as root).
PY39=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python 2>/dev/null | tail -n 1 || true)
if [ -n "$PY39" ]; then
    venv=$(mktemp -d)
    "$PY39" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e '.[test]'
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit
    rm -rf "$venv"
fi

# The namespace tests first, then the real VMs (tests/realvm: Debian guests under QEMU, one
# boot shared by several scenarios), each run checked: nothing skipped, and the suite ran.
check_report() {
    "$PY" - "$1" "$2" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
kind = sys.argv[2]
suites = [root] if root.tag == "testsuite" else list(root)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
tests = sum(int(s.get("tests", 0)) for s in suites)
ran = sum(1 for c in root.iter("testcase") if f".{kind}." in c.get("classname", ""))
if skipped or not ran:
    sys.exit(f"tests/run.sh: {skipped} test(s) skipped, {ran} {kind} test(s) ran: "
             "every test must run")
print(f"tests/run.sh: {tests} tests, {ran} {kind}, none skipped")
PYEOF
}
report=$(mktemp --suffix=.xml)
"$PY" -m pytest -q -p no:cacheprovider -rs --junitxml="$report" --ignore=tests/realvm tests
check_report "$report" e2e
if ! wait "$build_pid"; then
    echo "tests/run.sh: building the real-VM images failed:" >&2
    tail -n 60 "$build_log" >&2
    exit 1
fi
cat "$build_log"
rm -f "$build_log"
ENI_GUEST_LAB_DEB=$(ls "$deb_dir"/eni-guest_*_all.deb)
export ENI_GUEST_LAB_DEB
"$PY" -m pytest -q -p no:cacheprovider -rs -s --junitxml="$report" tests/realvm
check_report "$report" realvm
rm -f "$report"
rm -rf "$deb_dir"
