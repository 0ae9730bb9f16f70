"""The registry of clouds is the one list: the provider modules, the command line's choices,
auto-detection and get_provider all cover exactly its entries.

The provider modules found on disk are the independent side of each comparison: a provider
module without an entry, an entry without a module, or a list written out by hand somewhere
that misses a cloud makes one of these fail.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import click
import pytest

import eni_guest.providers
from eni_guest import cli
from eni_guest.config import Config
from eni_guest.errors import ConfigError
from eni_guest.providers import _make, detect, get_provider, registry
from eni_guest.providers.common import MetadataService, TokenRules

NOT_PROVIDERS = {"base", "common", "detect", "http", "registry"}  # helpers, not clouds


def provider_classes() -> dict[str, type]:
    """Cloud name -> the class of every module in providers/ that defines a provider."""
    found = {}
    for module in pkgutil.iter_modules(eni_guest.providers.__path__):
        if module.name in NOT_PROVIDERS:
            continue
        mod = importlib.import_module(f"eni_guest.providers.{module.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and callable(getattr(cls, "read", None)):
                found[cls.name] = cls
    return found


def config(tmp_path: Any, provider: str) -> Config:
    return Config(provider=provider, static_file=str(tmp_path / "enis.toml")).validate()


def test_every_provider_module_has_one_entry() -> None:
    assert sorted(provider_classes()) == sorted(registry.names())
    assert len(set(registry.names())) == len(registry.CLOUDS)


@pytest.mark.parametrize("name", sorted(registry.BY_NAME))
def test_get_provider_builds_each_entry_and_alias(tmp_path, name: str) -> None:
    provider = get_provider(config(tmp_path, name))
    try:
        canonical = registry.cloud(name).name
        assert type(provider) is provider_classes()[canonical]
        assert provider.name == canonical  # what `show` and the logs print
    finally:
        provider.close()


def test_unknown_provider_is_a_config_error_listing_every_choice(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        get_provider(config(tmp_path, "azure"))
    message = str(info.value)
    assert "'azure' is not known" in message
    for name in ("auto", *provider_classes(), "aliyun"):
        assert name in message
    with pytest.raises(ConfigError):
        _make("auto", config(tmp_path, "aws"))  # auto is not a cloud


def metadata_commands() -> dict[str, click.Command]:
    """Every command (`hotplug add` for a subcommand) with a --provider, but the demo."""
    commands = {}
    for name, command in cli.main.commands.items():
        if isinstance(command, click.Group):
            commands.update({f"{name} {n}": c for n, c in command.commands.items()})
        else:
            commands[name] = command
    return {
        name: command
        for name, command in commands.items()
        if name != "demo" and any(p.name == "provider" for p in command.params)
    }


def provider_choices(command: click.Command) -> list[str]:
    """The names `--provider` offers: click's choices (the demo), or those its help lists
    (the metadata commands take any name and refuse an unknown one in one line)."""
    option = next(p for p in command.params if p.name == "provider")
    if isinstance(option.type, click.Choice):
        return list(option.type.choices)
    listed = option.help.split(": ", 1)[1].split(" (default")[0]
    return listed.split(", ")


def test_cli_choices_are_the_registry_entries() -> None:
    commands = metadata_commands()
    assert set(commands) == {"apply", "show", "hotplug add", "hotplug remove", "watch"}
    expected = ["auto", *registry.names(), "aliyun"]
    assert sorted(expected[1:-1]) == sorted(provider_classes())
    for name, command in commands.items():
        assert provider_choices(command) == expected, name
    # the demo: every cloud whose metadata the simulator serves
    demo = provider_choices(cli.main.commands["demo"])
    assert demo == [c.sim_format for c in registry.CLOUDS if c.sim_format]
    assert sorted(demo) == sorted(provider_classes())


def test_detection_covers_every_cloud_with_a_service() -> None:
    with_service = {c.name for c in registry.CLOUDS if c.endpoints}
    assert with_service == set(provider_classes()) - {"static"}  # a file: nothing to probe
    assert set(detect.PROBES) == set(detect.DEFAULT_ENDPOINTS) == with_service
    assert sorted(detect.PRIORITY) == sorted(with_service)
    assert {provider for _, _, provider in detect.DMI_RULES} == with_service
    assert {field for field, _, _ in detect.DMI_RULES} <= set(detect.DMI_FIELDS)
    assert all(needle == needle.lower() for _, needle, _ in detect.DMI_RULES)
    for c in registry.CLOUDS:
        assert detect.DEFAULT_ENDPOINTS.get(c.name) == (c.endpoints[0] if c.endpoints else None)


def test_priority_puts_the_most_specific_probe_first() -> None:
    assert detect.PRIORITY == ("openstack", "jdcloud", "aws", "alibaba", "tencent")


def test_token_rules_are_the_registry_entries_own() -> None:
    """The providers' sessions and the detection probes use the same TokenRules objects."""
    with_tokens = {c.name: c.tokens for c in registry.CLOUDS if c.tokens is not None}
    assert sorted(with_tokens) == ["alibaba", "aws"]
    for name, rules in with_tokens.items():
        assert isinstance(rules, TokenRules)
        provider: Any = _make(name, Config(provider=name).validate())
        try:
            assert isinstance(provider.service, MetadataService)
            assert provider.service.tokens is rules
        finally:
            provider.close()
