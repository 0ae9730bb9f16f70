"""Settings: defaults, then the TOML file, then ENI_GUEST_* variables, then options."""

from __future__ import annotations

from pathlib import Path

import pytest

from eni_guest import config
from eni_guest.config import Config, load
from eni_guest.errors import EXIT_USAGE, ConfigError


@pytest.fixture(autouse=True)
def no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever /etc holds on the test machine must not leak into these tests."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent" / "eni-guest.toml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eni-guest.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_are_what_load_returns_without_settings() -> None:
    assert Config().validate() == Config()
    cfg = load(environ={}, options={})
    assert cfg == Config()
    assert (cfg.table_base, cfg.priority_base, cfg.protocol, cfg.interface_group) == (
        10000,
        10000,
        229,
        229,
    )
    assert cfg.ipv6 is True and cfg.mtu == 0


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "mtu = 9001\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", path)
    assert load(environ={}).mtu == 9001


def test_file_then_env_then_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'table_base = 20000\nmtu = 9001\nmetadata_timeout = 1.5\nprovider = "aws"\n',
    )
    env = {"ENI_GUEST_TABLE_BASE": "30000", "ENI_GUEST_MTU": "1500"}
    cfg = load(path, environ=env, options={"table_base": 40000, "lock_timeout": None})
    assert cfg.table_base == 40000  # option beats env beats file
    assert cfg.mtu == 1500  # env beats file
    assert cfg.metadata_timeout == 1.5  # file beats default
    assert cfg.lock_timeout == 30.0  # an option given as None means "not given"

    assert load(path, environ=env).table_base == 30000
    assert load(path, environ={}).table_base == 20000


def test_env_names_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "interface_group = 7\n")
    cfg = load(environ={"ENI_GUEST_CONFIG": str(path)})
    assert cfg.interface_group == 7


def test_env_skip_variables_are_not_settings() -> None:
    # ENI_GUEST_SKIP_* belong to other tools (e.g. the udev rule); they must not be refused.
    assert load(environ={"ENI_GUEST_SKIP_UDEV": "1"}) == Config()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("IPV6", "false", False),
        ("IPV6", "no", False),
        ("IPV6", "0", False),
        ("IPV6", "Off", False),
        ("IPV6", "TRUE", True),
        ("IPV6", "yes", True),
        ("IPV6", " on ", True),
        ("MTU", "9001", 9001),
        ("METADATA_RETRIES", " 5 ", 5),
        ("METADATA_TIMEOUT", "0.25", 0.25),
        ("METADATA_DEADLINE", "20", 20.0),
        ("LOCK_FILE", "/tmp/x.lock", "/tmp/x.lock"),
        ("METADATA_URL", "http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_env_values_are_parsed(name: str, text: str, expected: object) -> None:
    cfg = load(environ={"ENI_GUEST_" + name: text})
    value = getattr(cfg, name.lower())
    assert value == expected
    assert type(value) is type(expected)


def test_toml_int_for_float_is_accepted(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "metadata_deadline = 20\n"), environ={})
    assert cfg.metadata_deadline == 20.0 and isinstance(cfg.metadata_deadline, float)


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "table_bsae = 20000\n")
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert "table_bsae" in str(err.value)
    assert str(path) in str(err.value)
    assert err.value.exit_code == EXIT_USAGE


def test_unknown_key_in_env_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load(environ={"ENI_GUEST_TABLEBASE": "20000"})
    assert "tablebase" in str(err.value).lower()


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="colour"):
        load(environ={}, options={"colour": "blue"})


@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        ('table_base = "x"\n', "table_base", "x"),
        ("ipv6 = 1\n", "ipv6", "1"),
        ("table_base = true\n", "table_base", "True"),
        ("mtu = 1500.0\n", "mtu", "1500.0"),
        ("provider = 3\n", "provider", "3"),
        ('metadata_timeout = "soon"\n', "metadata_timeout", "soon"),
    ],
)
def test_wrong_type_in_file_names_key_and_value(
    tmp_path: Path, toml: str, key: str, value: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, toml), environ={})
    assert key in str(err.value)
    assert value in str(err.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("IPV6", "maybe"),
        ("TABLE_BASE", "ten"),
        ("MTU", "1500.5"),
        ("METADATA_TIMEOUT", "2s"),
    ],
)
def test_wrong_type_in_env_names_key_and_value(name: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(environ={"ENI_GUEST_" + name: text})
    assert name.lower() in str(err.value).lower()
    assert text in str(err.value)


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "table_base = = 3\n")
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert str(path) in str(err.value)


def test_named_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as err:
        load(missing, environ={})
    assert str(missing) in str(err.value)
    with pytest.raises(ConfigError):
        load(environ={"ENI_GUEST_CONFIG": str(missing)})


TOP_PRIORITY_BASE = 32765 - config.SLOTS  # base + 2048 must stay below main's 32766


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("table_base", 252),
        ("table_base", 255),
        ("table_base", 1),  # 1..2048 spans 252-255
        ("table_base", 250),
        ("table_base", 0),
        ("table_base", 2**32 - config.SLOTS + 1),  # last table would overflow u32
        ("priority_base", TOP_PRIORITY_BASE + 1),
        ("priority_base", 32000),
        ("priority_base", 0),
        ("protocol", 3),
        ("protocol", 4),
        ("protocol", 256),
        ("interface_group", 0),
        ("interface_group", 2**31),
        ("mtu", 50),
        ("mtu", 67),
        ("mtu", 65536),
        ("metadata_timeout", 0.0),
        ("metadata_retries", 11),
        ("lock_timeout", -1.0),
        ("metadata_url", "169.254.169.254"),
        ("provider", ""),
    ],
)
def test_out_of_range_is_refused_naming_key_and_value(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        load(environ={}, options={key: value})
    assert key in str(err.value)
    assert repr(value) in str(err.value)


def test_deadline_shorter_than_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="metadata_deadline"):
        load(environ={}, options={"metadata_timeout": 5.0, "metadata_deadline": 2.0})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("table_base", 256),
        ("table_base", 2**32 - config.SLOTS),
        ("priority_base", 1),
        ("priority_base", TOP_PRIORITY_BASE),
        ("protocol", 5),
        ("protocol", 255),
        ("interface_group", 1),
        ("interface_group", 2**31 - 1),
        ("mtu", 0),
        ("mtu", 68),
        ("mtu", 9001),
        ("metadata_retries", 0),
        ("lock_timeout", 0.0),
    ],
)
def test_boundaries_that_are_allowed(key: str, value: object) -> None:
    assert getattr(load(environ={}, options={key: value}), key) == value


def test_range_check_applies_to_file_and_env_values_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table_base"):
        load(write(tmp_path, "table_base = 253\n"), environ={})
    with pytest.raises(ConfigError, match="mtu"):
        load(environ={"ENI_GUEST_MTU": "50"})


# ---------------------------------------------------------------- overlay (README "Overlay ...")

OVERLAY = """
exclude_enis = ["eni-0abc1234", "0E-11-22-33-44-55"]
exclude_interfaces = ["eth3", "cni*"]
exclude_ips = ["10.0.2.50", "10.0.2.64/26", "2001:DB8::/64"]

[[eni]]
match = "eni-0def5678"
add_ipv4s = ["10.0.2.51", "10.0.2.52", "10.0.2.51"]
ipv4_subnet = "10.0.2.0/23"
ipv4_gateway = "10.0.2.254"

[[eni]]
match = "0E:11:22:33:44:66"
add_ipv6s = ["2001:db8:1:0::20"]
ipv6_subnet = "2001:db8:1::/56"
ipv6_gateway = "fe80::1"
"""


def test_overlay_keys_are_read_checked_and_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, OVERLAY)
    cfg = load(path, environ={})
    assert cfg.exclude_enis == ("eni-0abc1234", "0e:11:22:33:44:55")
    assert cfg.exclude_interfaces == ("eth3", "cni*")
    assert cfg.exclude_ips == ("10.0.2.50/32", "10.0.2.64/26", "2001:db8::/64")
    first, second = cfg.eni
    assert first == config.EniOverlay(
        match="eni-0def5678",
        add_ipv4s=("10.0.2.51", "10.0.2.52"),  # duplicates dropped, order kept
        ipv4_subnet="10.0.2.0/23",
        ipv4_gateway="10.0.2.254",
        where=f"config {path}: eni[1]",
    )
    assert second.match == "0e:11:22:33:44:66"
    assert second.add_ipv6s == ("2001:db8:1::20",)
    assert (second.ipv6_subnet, second.ipv6_gateway) == ("2001:db8:1::/56", "fe80::1")
    assert second.where.endswith("eni[2]")
    hash(cfg)  # still a frozen, hashable value (the watch daemon compares configs)


def test_eni_table_mtu_is_read(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[[eni]]\nmatch = "eni-1"\nmtu = 9001\n'), environ={})
    assert cfg.eni[0].mtu == 9001
    assert load(write(tmp_path, '[[eni]]\nmatch = "eni-1"\n'), environ={}).eni[0].mtu is None


def test_overlay_lookups() -> None:
    cfg = load(
        environ={
            "ENI_GUEST_EXCLUDE_ENIS": "eni-1, 0e:00:00:00:00:09",
            "ENI_GUEST_EXCLUDE_INTERFACES": "cni*,eth[3-5]",
        }
    )
    assert cfg.excluded_eni("0e:00:00:00:00:09", "eni-9") == "0e:00:00:00:00:09"
    assert cfg.excluded_eni("0e:00:00:00:00:01", "eni-1") == "eni-1"
    assert cfg.excluded_eni("0e:00:00:00:00:01", None) is None
    assert cfg.excluded_interface("cni0a1b") == "cni*"
    assert cfg.excluded_interface("eth4") == "eth[3-5]"
    assert cfg.excluded_interface("eth2") is None
    assert cfg.excluded_interface("CNI0") is None  # interface names are case-sensitive


def test_overlay_lists_from_the_environment_are_comma_separated(tmp_path: Path) -> None:
    path = write(tmp_path, 'exclude_ips = ["10.9.9.9"]\n')
    env = {"ENI_GUEST_EXCLUDE_IPS": " 10.0.2.50 , 10.0.2.64/26,,2001:db8::/64 "}
    assert load(path, environ=env).exclude_ips == ("10.0.2.50/32", "10.0.2.64/26", "2001:db8::/64")
    # an empty variable empties the file's list
    assert load(path, environ={"ENI_GUEST_EXCLUDE_IPS": ""}).exclude_ips == ()


def test_eni_tables_cannot_come_from_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"eni: \[\[eni\]\] tables can only be given"):
        load(environ={"ENI_GUEST_ENI": "match=eni-1"})


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            'exclude_ips = ["10.0.2.300"]',
            "exclude_ips = ['10.0.2.300']: '10.0.2.300' is not an IP address or network",
        ),
        (
            'exclude_ips = ["10.0.2.65/26"]',
            "exclude_ips = ['10.0.2.65/26']: '10.0.2.65/26' is not a network: host bits are "
            "set (the network would be 10.0.2.64/26)",
        ),
        ('exclude_ips = ["0.0.0.0/0"]', "'0.0.0.0/0' is too wide: it covers every IPv4 address"),
        ('exclude_ips = "10.0.2.50"', "exclude_ips = '10.0.2.50': must be a list of strings"),
        ("exclude_ips = [3]", "exclude_ips = [3]: must be a list of strings"),
        (
            'exclude_enis = ["0e:11:22:33:44"]',
            "exclude_enis = ['0e:11:22:33:44']: '0e:11:22:33:44' is not a MAC",
        ),
        ('exclude_enis = ["eni 1"]', "'eni 1' is not a MAC or an ENI id"),
        ('exclude_interfaces = ["eth/1"]', "'eth/1' is not an interface name pattern"),
        ('exclude_interfaces = [""]', "'' is not an interface name pattern"),
        ("eni = 3", "eni = 3: must be [[eni]] tables"),
        ('eni = ["x"]', "eni = ['x']: must be [[eni]] tables"),
        ("[[eni]]\nadd_ipv4s = []", "eni[1].match: missing"),
        ("[[eni]]\nmatch = 5", "eni[1].match = 5: must be a string"),
        ('[[eni]]\nmatch = "0e:11"', "eni[1].match = '0e:11': not a MAC"),
        (
            '[[eni]]\nmatch = "eni-1"\nmac = "0e:11:22:33:44:55"',
            "eni[1]: unknown key 'mac' (known: match, add_ipv4s",
        ),
        (
            '[[eni]]\nmatch = "eni-1"\n[[eni]]\nmatch = "eni-2"\nipv4_gateway = "x"',
            "eni[2].ipv4_gateway = 'x': not an IPv4 address",
        ),
        ('[[eni]]\nmatch = "eni-1"\nipv4_gateway = "2001:db8::1"', "not an IPv4 address"),
        ('[[eni]]\nmatch = "eni-1"\nipv6_gateway = "10.0.2.1"', "not an IPv6 address"),
        (
            '[[eni]]\nmatch = "eni-1"\nadd_ipv4s = ["10.0.2.5", "10.0.2.256"]',
            "eni[1].add_ipv4s = ['10.0.2.5', '10.0.2.256']: '10.0.2.256' is not a unicast IPv4",
        ),
        ('[[eni]]\nmatch = "eni-1"\nadd_ipv4s = ["224.0.0.1"]', "not a unicast IPv4 address"),
        ('[[eni]]\nmatch = "eni-1"\nadd_ipv6s = ["10.0.2.5"]', "not a unicast IPv6 address"),
        ('[[eni]]\nmatch = "eni-1"\nadd_ipv4s = "10.0.2.5"', "must be a list of strings"),
        ('[[eni]]\nmatch = "eni-1"\nmtu = 67', "eni[1].mtu = 67: must be an integer in 68..65535"),
        ('[[eni]]\nmatch = "eni-1"\nmtu = 65536', "eni[1].mtu = 65536: must be an integer"),
        ('[[eni]]\nmatch = "eni-1"\nmtu = "9001"', "eni[1].mtu = '9001': must be an integer"),
        ('[[eni]]\nmatch = "eni-1"\nmtu = true', "eni[1].mtu = True: must be an integer"),
        (
            '[[eni]]\nmatch = "eni-1"\nipv4_subnet = "10.0.2.1/24"',
            "eni[1].ipv4_subnet = '10.0.2.1/24': not a network: host bits are set",
        ),
        ('[[eni]]\nmatch = "eni-1"\nipv4_subnet = "2001:db8::/64"', "not an IPv4 network"),
        ('[[eni]]\nmatch = "eni-1"\nipv6_subnet = 64', "ipv6_subnet = 64: not an IPv6 network"),
        (
            '[[eni]]\nmatch = "0e:11:22:33:44:55"\n[[eni]]\nmatch = "0E-11-22-33-44-55"',
            "eni[2].match = '0E-11-22-33-44-55': eni[1] names the same ENI",
        ),
        (
            'exclude_ips = ["10.0.2.64/26"]\n[[eni]]\nmatch = "eni-1"\nadd_ipv4s = ["10.0.2.70"]',
            "eni[1].add_ipv4s = '10.0.2.70': also excluded by exclude_ips '10.0.2.64/26'",
        ),
    ],
)
def test_overlay_errors_are_one_line_naming_file_key_and_value(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    message = str(err.value)
    assert err.value.exit_code == EXIT_USAGE
    assert "\n" not in message
    assert message.startswith(f"config {path}: "), message
    assert expected in message, message


def test_overlay_errors_in_the_environment_name_it() -> None:
    with pytest.raises(ConfigError) as err:
        load(environ={"ENI_GUEST_EXCLUDE_IPS": "10.0.2.50,nope"})
    assert str(err.value) == (
        "environment ENI_GUEST_*: exclude_ips = '10.0.2.50,nope': 'nope' is not an IP "
        "address or network in CIDR form"
    )


def test_unknown_top_level_key_lists_the_overlay_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, 'exclude_ip = ["10.0.2.50"]\n'), environ={})
    assert "'exclude_ip'" in str(err.value) and "exclude_ips" in str(err.value)
