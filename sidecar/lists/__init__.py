"""Model lists read into catalog records: pure functions of decoded JSON, below both the daemon's
gateway poll and the SDK.

Everything here imports only the standard library, pydantic and `sidecar.catalog`, so a user of
the SDK never loads the daemon (tests/unit/test_sdk_alone.py checks it).
"""
