"""The real cloud-init (Debian 12: 22.4, on /usr/bin/python3) loads and runs our module on a VM.

`eni-guest install --root` writes the module and the cloud.cfg.d drop-in into a temporary image
tree (a copy of this machine's /etc/cloud/cloud.cfg, and an empty cloudinit/config directory
standing for the image's cloud-init package).  Then, inside the simulated VM's namespace,
cloud-init's own Python runs cloud-init's own machinery on that tree:

* the system configuration is merged from the tree's cloud.cfg and cloud.cfg.d by cloud-init
  (``util.read_conf_with_confd``), and must list every original init module plus eni_guest;
* ``Modules.run_single("eni_guest")`` finds the module through cloud-init's importer, validates
  its ``meta`` and calls ``handle`` the way 22.4 does (five positional arguments), with the
  user-data given as a cloud-config file.

Nothing touches /etc/cloud or /var/lib/cloud: cloud-init's paths point into the temporary
directory.  The proof that it worked is traffic: a secondary ENI's IP reaches the far host
through its own ENI only after the module ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from eni_guest.install import find_command, install
from eni_guest.install_cloudinit import CLOUD_DROPIN
from eni_guest_lab.testbed import FAR_V4, METADATA_V4, SimVM

pytestmark = pytest.mark.e2e

SYSTEM_PYTHON = "/usr/bin/python3"
MODULE_DIR = "usr/lib/python3/dist-packages/cloudinit/config"

HARNESS = r"""
import json, logging, sys
root, cloud_dir, user_data = sys.argv[1:4]

import cloudinit.config
from cloudinit import importer, stages, util, version
from cloudinit.config.modules import Modules
from cloudinit.sources.DataSourceNone import DataSourceNone

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True)

# The image's cloud-init package directory is where `eni-guest install` put the module.
cloudinit.config.__path__.append(root + "/usr/lib/python3/dist-packages/cloudinit/config")

sys_cfg = util.read_conf_with_confd(root + "/etc/cloud/cloud.cfg")
sys_cfg["system_info"] = {
    "distro": "debian",
    "paths": {"cloud_dir": cloud_dir + "/var", "run_dir": cloud_dir + "/run"},
}
init = stages.Init(ds_deps=[])
init._cfg = sys_cfg  # never read this machine's /etc/cloud
init.datasource = DataSourceNone(init.cfg, init.distro, init.paths)
modules = Modules(init, cfg_files=[user_data])

mod = importer.import_module("cloudinit.config.cc_eni_guest")
mod.ENV_FILE = cloud_dir + "/cloud-init.env"
restarts = []
mod._restart_watch = lambda: restarts.append(1)

section = [m["mod"] for m in modules._read_modules("cloud_init_modules")]
ran, failures = modules.run_single("eni_guest")
print(json.dumps({
    "version": version.version_string(),
    "section": section,
    "ran": ran,
    "failures": [[name, repr(e)] for name, e in failures],
    "module_file": mod.__file__,
    "restarts": len(restarts),
}))
"""


def _cloud_init_modules(cloud_cfg: str) -> list[str]:
    """Module names of the top-level cloud_init_modules block of a cloud.cfg."""
    names, inside = [], False
    for line in cloud_cfg.splitlines():
        if line.startswith("cloud_init_modules:"):
            inside = True
        elif inside and line.strip().startswith("- "):
            names.append(line.strip()[2:])
        elif inside and line and not line[0].isspace() and not line.startswith("#"):
            break
    return names


def test_real_cloud_init_runs_the_module_on_a_vm(
    simvm: Callable[..., SimVM], scenario_3eni: dict[str, Any], tmp_path: Path
) -> None:
    assert Path(SYSTEM_PYTHON).exists(), "no /usr/bin/python3 (tests/run.sh installs cloud-init)"
    check = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", "import cloudinit.version as v; print(v.version_string())"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, f"cloud-init not importable by {SYSTEM_PYTHON}: {check.stderr}"

    # An image tree with cloud-init: this machine's cloud.cfg (read only) and a package dir.
    root = tmp_path / "image"
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    shutil.copy("/etc/cloud/cloud.cfg", root / "etc/cloud/cloud.cfg")
    (root / MODULE_DIR).mkdir(parents=True)
    report = install(root)  # the real console script: /usr/bin/python3 cannot import eni_guest
    assert f"wrote {root / MODULE_DIR / 'cc_eni_guest.py'}" in report.changed
    assert f"wrote {root / CLOUD_DROPIN}" in report.changed
    module_text = (root / MODULE_DIR / "cc_eni_guest.py").read_text()
    assert f"ENI_GUEST_COMMAND = {json.dumps(find_command())}" in module_text

    vm = simvm(scenario_3eni)
    third = scenario_3eni["enis"][2]
    eth = vm.ifname_of(third["mac"])
    src = third["local-ipv4s"][1]
    assert not vm.probe(src, FAR_V4), "the secondary ENI works before anything ran"

    cloud_dir = tmp_path / "cloud"
    cloud_dir.mkdir()
    user_data = tmp_path / "user-data.yaml"
    settings = {
        "provider": "aws",
        "metadata_url": f"http://{METADATA_V4}",
        "lock_file": str(vm.lock_file),  # not this machine's /run/eni-guest.lock
        # the namespace shares this machine's /run: no NetworkManager/networkd drop-ins there
        "manage_distro_network": False,
    }
    user_data.write_text("#cloud-config\n" + json.dumps({"eni_guest": settings}) + "\n")
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)

    cp = vm.guest(
        ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", SYSTEM_PYTHON, "-I", str(harness)]
        + [str(root), str(cloud_dir), str(user_data)],
        check=False,
        timeout=180,
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    result = json.loads(cp.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("22.4"), result["version"]

    original = _cloud_init_modules(Path("/etc/cloud/cloud.cfg").read_text())
    assert original, "this machine's cloud.cfg lists no init modules"
    assert result["section"] == original + ["eni_guest"]  # merged by cloud-init, none lost
    assert result["module_file"] == str(root / MODULE_DIR / "cc_eni_guest.py")
    assert result["failures"] == [] and result["ran"] == ["eni_guest"], cp.stderr[-3000:]
    # cloud-init 22.4 called handle(name, cfg, cloud, log, args): the module logged apply's lines
    assert "Running module eni_guest" in cp.stderr
    assert "eni-guest: " in cp.stderr

    # The ENIs are configured: the secondary IP leaves through its own ENI.
    probe = vm.probe(src, FAR_V4)
    assert probe and probe.exit_iface == eth, probe.detail
    second = scenario_3eni["enis"][1]
    probe = vm.probe(second["local-ipv4s"][0], FAR_V4)
    assert probe and probe.exit_iface == vm.ifname_of(second["mac"]), probe.detail

    # The settings were kept for the systemd units, and the watch daemon told to pick them up.
    env = (cloud_dir / "cloud-init.env").read_text()
    assert f'ENI_GUEST_METADATA_URL="http://{METADATA_V4}"' in env
    assert 'ENI_GUEST_MANAGE_DISTRO_NETWORK="false"' in env
    assert result["restarts"] == 1
