"""Render the files eni-guest places on a system (units, udev rule, drop-ins) from jinja2 templates.

The templates live in ``eni_guest/templates`` as package data, so an installed eni-guest can
place them without a source checkout.  StrictUndefined: a misspelt variable must fail the
install, not write ``ExecStart= hotplug add`` into a unit.  The directory also holds the
cloud-init module, cc_eni_guest.py: plain Python, not a template (install.render_module).

Every apply renders the NetworkManager/networkd drop-ins to see whether they changed, and
importing jinja2 and compiling a template costs ~40 ms, more than reading the kernel.  So
inside `cached_in(file)` (distro.py's drop-ins, beside its files under /run) a render is
kept with the exact template text and context it came from, and reused while both are the
same: a run whose ENIs did not change never imports jinja2.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MAX_CACHE = 256 * 1024  # bytes read of a cache file: the drop-ins are far smaller

_cache: list[dict[str, Any]] = []  # the active cache: {"entries": {...}, "dirty": bool}


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # configuration files, not HTML
    )


def render_template(name: str, context: Mapping[str, Any]) -> str:
    if not _cache:
        return str(_environment().get_template(name).render(**context))
    source = (TEMPLATE_DIR / name).read_text()
    key = json.dumps(context, sort_keys=True)
    entries = _cache[-1]["entries"]
    kept = entries.get(name)
    if isinstance(kept, dict) and kept.get("source") == source and kept.get("context") == key:
        text = kept.get("text")
        if isinstance(text, str):
            return text
    text = str(_environment().get_template(name).render(**context))
    entries[name] = {"source": source, "context": key, "text": text}
    _cache[-1]["dirty"] = True
    return text


@contextlib.contextmanager
def cached_in(path: Path, root: Path) -> Iterator[None]:
    """Renders inside reuse and update the cache in `path` below `root` (written only when it
    changed, as the drop-ins are: no link followed below root; a cache that cannot be read or
    written only costs a render)."""
    _cache.append({"entries": _load(path), "dirty": False})
    try:
        yield
    finally:
        state = _cache.pop()
        if state["dirty"]:
            from .distro import write_if_changed
            from .errors import ConfigError

            with contextlib.suppress(OSError, ConfigError):  # a planted link: not followed
                write_if_changed(path, json.dumps(state["entries"]), root=root)


def _load(path: Path) -> dict[str, Any]:
    """The cache's entries, if it is a regular file of root's (or ours) nobody else may write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
            return {}
        if st.st_uid not in (0, os.geteuid()):
            return {}
        try:
            data: Optional[Any] = json.loads(f.read(MAX_CACHE).decode())
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}
