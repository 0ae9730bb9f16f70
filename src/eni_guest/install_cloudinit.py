"""`eni-guest install`'s cloud-init part: the module cloud-init runs at boot, and the drop-in
that lists it among cloud-init's init modules.

The module is eni_guest/templates/cc_eni_guest.py, plain Python shipped as package data and
copied into every cloud-init package found under the root with two values set: the command of
this eni-guest and the environment file it keeps user-data settings in (`render_module`).  The
drop-in repeats the init module list in force with eni_guest appended (`cloud_init_dropin`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .templating import TEMPLATE_DIR, render_template

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

CLOUD_CFG = "etc/cloud/cloud.cfg"
CLOUD_DROPIN = "etc/cloud/cloud.cfg.d/99-eni-guest.cfg"
CLOUD_ENV_FILE = "/etc/eni-guest/cloud-init.env"  # written by the cloud-init module at boot
CLOUD_MODULE = "cc_eni_guest.py"
# Where cloud-init's config modules live: Debian/Ubuntu, Fedora/RHEL/SUSE/Arch, pip.
CLOUDINIT_PACKAGE_GLOBS = (
    "usr/lib/python3/dist-packages/cloudinit/config",
    "usr/lib/python3*/site-packages/cloudinit/config",
    "usr/lib64/python3*/site-packages/cloudinit/config",
    "usr/local/lib/python3*/*-packages/cloudinit/config",
)
CLOUD_MODULE_NAME = "eni_guest"
# The command the shipped module calls (a system-wide pip install); the repository's reference
# copies of the installed files (udev/, systemd/, cloud-init/) are rendered for it too.
DEFAULT_BINARY = "/usr/local/bin/eni-guest"


# The lines of the shipped cloud-init module that `install` sets, as they ship: the module
# in the templates directory is plain Python (linted and tested as it is), set up for a
# system-wide pip install, so it doubles as the repository's reference copy.
MODULE_LINES = {
    "ENI_GUEST_COMMAND": json.dumps([DEFAULT_BINARY]),
    "ENV_FILE": json.dumps(CLOUD_ENV_FILE),
}


def set_module_lines(source: str, values: dict[str, str]) -> str:
    """``source`` with each shipped line ``NAME = ...`` of MODULE_LINES replaced by
    ``NAME = values[NAME]``; RuntimeError unless each is there exactly once, as shipped."""
    lines = source.splitlines(keepends=True)
    for name, value in values.items():
        shipped = f"{name} = {MODULE_LINES[name]}\n"
        where = [i for i, line in enumerate(lines) if line == shipped]
        if len(where) != 1:
            raise RuntimeError(
                f"{CLOUD_MODULE}: the line {shipped.strip()!r} is there {len(where)} times, "
                "not once: install cannot set it"
            )
        lines[where[0]] = f"{name} = {value}\n"
    return "".join(lines)


def render_module(argv: list[str]) -> str:
    """The cloud-init module calling ``argv``: the shipped file with its two values set."""
    source = (TEMPLATE_DIR / CLOUD_MODULE).read_text()
    values = {"ENI_GUEST_COMMAND": json.dumps(list(argv)), "ENV_FILE": json.dumps(CLOUD_ENV_FILE)}
    return set_module_lines(source, values)


# ------------------------------------------------------------------- cloud-init's module list

_TOP_KEY = re.compile(r"^[^\s#-][^:]*:")
_SECTION = "cloud_init_modules"


def _modules_block(text: str) -> Optional[list[str]]:
    """The item lines of a top-level ``cloud_init_modules:`` block sequence, verbatim.

    cloud.cfg is YAML; we do not parse it (no YAML library needed for this) but copy the
    block's lines, which keeps any per-module frequency or arguments exactly as written.
    Returns None when the key is absent; raises ValueError for a form we do not copy.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(f"{_SECTION}:"):
            continue
        rest = line[len(_SECTION) + 1 :].split("#", 1)[0].strip()
        if rest.startswith("["):
            if rest.count("[") != 1 or not rest.endswith("]"):
                raise ValueError(f"{_SECTION} is a nested flow list")
            items = [x.strip() for x in rest[1:-1].split(",") if x.strip()]
            return [f" - {x}" for x in items]
        if rest:
            raise ValueError(f"{_SECTION}: {rest!r} is not a list")
        block = []
        for follow in lines[i + 1 :]:
            if _TOP_KEY.match(follow):
                break
            block.append(follow)
        # The comment above the next key belongs to that key.
        while block and (not block[-1].strip() or block[-1].startswith("#")):
            block.pop()
        return block
    return None


def cloud_init_dropin(root: Path) -> tuple[Optional[str], list[str]]:
    """(content of 99-eni-guest.cfg or None, notes) for the image under ``root``.

    cloud-init merges cloud.cfg.d files over cloud.cfg with lists replaced, not appended: a
    drop-in naming only our module would silently switch off every other init module.  So the
    drop-in repeats the list in force - from the highest-priority file that sets it - with
    eni_guest appended.
    """
    notes: list[str] = []
    confd = root / CLOUD_DROPIN
    candidates = sorted(
        (p for p in confd.parent.glob("*.cfg") if p.name != confd.name),
        key=lambda p: p.name,
        reverse=True,
    )
    candidates.append(root / CLOUD_CFG)
    for path in candidates:
        try:
            block = _modules_block(path.read_text(errors="replace"))
        except FileNotFoundError:
            continue
        except ValueError as e:
            notes.append(
                f"cloud-init: {path}: {e}; add '{CLOUD_MODULE_NAME}' to its "
                f"{_SECTION} by hand (the module is installed)"
            )
            return None, notes
        if block is None:
            continue
        if path.parent == confd.parent and path.name > confd.name:
            notes.append(
                f"cloud-init: {path} sets {_SECTION} after {confd.name}; add "
                f"'{CLOUD_MODULE_NAME}' to it by hand"
            )
        items = [line for line in block if line.strip().startswith("-")]
        indent = items[0][: len(items[0]) - len(items[0].lstrip())] if items else " "
        listed = any(re.search(rf"\b{CLOUD_MODULE_NAME}\b|\beni-guest\b", line) for line in items)
        lines = block + ([] if listed else [f"{indent}- {CLOUD_MODULE_NAME}"])
        source = "/" + str(path.relative_to(root))
        return render_template("99-eni-guest.cfg.j2", {"lines": lines, "source": source}), notes
    lines = [f" - {CLOUD_MODULE_NAME}"]
    source = "nowhere (no file sets it)"
    return render_template("99-eni-guest.cfg.j2", {"lines": lines, "source": source}), notes


def cloudinit_module_dirs(root: Path) -> list[Path]:
    dirs: set[Path] = set()
    for pattern in CLOUDINIT_PACKAGE_GLOBS:
        dirs.update(p for p in root.glob(pattern) if p.is_dir())
    return sorted(dirs)


def cloud_init_files(root: Path, argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(path under root -> content, notes): the module in each cloud-init package, the drop-in."""
    module_dirs = cloudinit_module_dirs(root)
    if not module_dirs:
        return {}, ["cloud-init not found under the root: its module was not installed"]
    files = {str((d / CLOUD_MODULE).relative_to(root)): render_module(argv) for d in module_dirs}
    dropin, notes = cloud_init_dropin(root)
    if dropin is not None:
        files[CLOUD_DROPIN] = dropin
    return files, notes
