import pytest

from sidecar.urls import carries_credentials


@pytest.mark.parametrize(
    ("url", "carries"),
    [
        ("https://user:key@gw.example.com", True),
        ("https://key@gw.example.com", True),
        ("https://:key@gw.example.com/v1", True),
        ("  http://user:pw@127.0.0.1:4000  ", True),
        ("http://%40:x@gw/v1", True),
        ("http://[::1]:4000", False),
        ("https://gw.example.com/v1", False),
        ("https://gw.example.com/a@b", False),  # in the path, not before the host
        ("http://@gw", False),  # names no one
        ("http://:@gw", False),
    ],
)
def test_credentials_are_a_user_or_a_password_before_the_host(url: str, carries: bool) -> None:
    assert carries_credentials(url) is carries
