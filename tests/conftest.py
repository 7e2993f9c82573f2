import pytest

# The real servers (LiteLLM, a fake upstream, sidecars) that tests/integration and tests/security share.
pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The secret audit reads what every sidecar of the run wrote: it goes last, after tests/security.
    items.sort(key=lambda item: item.path.name == "test_zz_secrets.py")
