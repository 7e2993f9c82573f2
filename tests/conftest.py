import pytest

# The real servers (LiteLLM, a fake upstream, sidecars) that tests/integration and tests/security share.
pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
