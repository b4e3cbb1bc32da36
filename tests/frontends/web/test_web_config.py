"""The web door's settings: CHATD_WEB_LISTEN, CHATD_WEB_ORIGINS, CHATD_WEB_TRUSTED_PROXIES."""

from ipaddress import ip_network

import pytest

from chatd.config import Config, ConfigError


def test_the_defaults():
    """Port 8080 on every interface, the page's own origin, no trusted proxy."""
    config = Config.from_environ({})
    assert config.web_listen == ("tcp:8080",)
    assert config.web_origins is None
    assert config.web_trusted_proxies == ()


def test_web_listen_takes_descriptions_or_off():
    """Several descriptions, or ``off`` (any case) for none."""
    config = Config.from_environ({"CHATD_WEB_LISTEN": "tcp:1, ssl:2:privateKey=k:certKey=c"})
    assert config.web_listen == ("tcp:1", "ssl:2:privateKey=k:certKey=c")
    assert Config.from_environ({"CHATD_WEB_LISTEN": "OFF"}).web_listen == ()
    with pytest.raises(ConfigError, match="CHATD_WEB_LISTEN"):
        Config.from_environ({"CHATD_WEB_LISTEN": "tcp:1,,tcp:2"})


def test_origins_are_normalized():
    """Lower case, no trailing slash; IPv6 literals and ports allowed."""
    config = Config.from_environ(
        {"CHATD_WEB_ORIGINS": "https://Chat.Example.com/, http://[::1]:8080"}
    )
    assert config.web_origins == ("https://chat.example.com", "http://[::1]:8080")


@pytest.mark.parametrize(
    "origin", ["chat.example.com", "ftp://x", "https://x/path", "https://x:99999", "*", "null"]
)
def test_anything_but_an_origin_is_refused(origin):
    """A path, another scheme, a wildcard: the server does not start."""
    with pytest.raises(ConfigError, match="CHATD_WEB_ORIGINS"):
        Config.from_environ({"CHATD_WEB_ORIGINS": origin})


def test_trusted_proxies_are_addresses_or_networks():
    """Single addresses become /32 (/128) networks; ``off`` is none."""
    config = Config.from_environ({"CHATD_WEB_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8, ::1"})
    assert config.web_trusted_proxies == (
        ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"), ip_network("::1/128")
    )
    assert Config.from_environ({"CHATD_WEB_TRUSTED_PROXIES": "off"}).web_trusted_proxies == ()
    with pytest.raises(ConfigError, match="CHATD_WEB_TRUSTED_PROXIES"):
        Config.from_environ({"CHATD_WEB_TRUSTED_PROXIES": "proxy.example.com"})
