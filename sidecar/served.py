"""What a hub serves at `/v1/catalogs`: each gateway's last good list as one prepared body, its
version (a hash of that content), and a wake-up for the long-polls waiting on a change.

The reconciler tells it each poll's outcome; a poll that changed nothing (the gateway client gives
back the same catalog object) costs an identity check. A changed list is hashed and encoded once,
and every follower then gets those same bytes: a thousand followers cost no per-request encoding.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import orjson

from sidecar.catalog import Catalog


@dataclass(frozen=True)
class ServedList:
    """One version of a gateway's list as served: never changed once built."""

    version: str
    models: int
    gateway_id: str = field(repr=False)
    catalog: Catalog = field(repr=False)
    listed: bytes = field(repr=False)
    wildcards: bytes = field(repr=False)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @functools.cached_property
    def body(self) -> bytes:
        """Made by the first request for this version, then the same bytes for every follower: a
        sidecar no follower asks holds no copy of its lists beside the catalogs' own text
        (10,000 models: 0.7 MiB; issue 19, RSS)."""
        return b"".join(
            (
                b'{"gateway":', orjson.dumps(self.gateway_id), b',"version":"', self.version.encode(),
                b'","listed":', self.listed, b',"models":', self.catalog.to_json().encode(),
                b',"wildcards":', self.wildcards, b"}",
            )
        )


def served_list(gateway_id: str, catalog: Catalog, routes: Iterable[str]) -> ServedList:
    """The version of `catalog`, its body made when first asked for. The version hashes what the
    body says but the gateway's id, so two hubs (replicas) holding the same list give the same
    version. The records are Catalog.to_json's text, made once per catalog and shared with the
    state files."""
    wildcards = orjson.dumps(list(routes))
    listed = str(catalog.listed).encode()
    digest = hashlib.blake2b(digest_size=16)
    for part in (listed, b"\0", catalog.to_json().encode(), b"\0", wildcards):
        digest.update(part)
    return ServedList(digest.hexdigest(), len(catalog), gateway_id, catalog, listed, wildcards)


class ServedGateway:
    """One gateway's served list and the long-polls waiting for it to change."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self.current: ServedList | None = None
        self._catalog: Catalog | None = None
        self._routes: tuple[str, ...] = ()
        # Made by the first waiter and set (then dropped) by the next change: one Event however
        # many wait, and none at all while nobody does.
        self._changed: anyio.Event | None = None
        self.waiting = 0
        self.versions = 0  # versions served so far, the first included
        self.closed = False

    def update(self, catalog: Catalog, routes: Iterable[str] = ()) -> bool:
        """The gateway's good list after a poll; whether what is served changed (waiters woken)."""
        routes = tuple(routes)
        if catalog is self._catalog and routes == self._routes:
            return False
        self._catalog, self._routes = catalog, routes
        served = served_list(self.gateway_id, catalog, routes)
        if self.current is not None and served.version == self.current.version:
            return False
        self.current = served
        self.versions += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return True

    def close(self) -> None:
        """The sidecar stops: every wait ends now (answered 304), not cut by the loop's end (500)."""
        self.closed = True
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed_from(self, version: str) -> ServedList | None:
        """Wait until the served version is not `version` (at once if it is not already); None
        once closed. The caller bounds the wait (a deadline, a client gone)."""
        while self.current is None or self.current.version == version:
            if self.closed:
                return None
            if self._changed is None:
                self._changed = anyio.Event()
            event = self._changed
            self.waiting += 1
            try:
                await event.wait()
            finally:
                self.waiting -= 1
        return self.current


class ServedCatalogs:
    """Every gateway's served list, in the operator's order."""

    def __init__(self, gateway_ids: Iterable[str]) -> None:
        self.gateways = {gateway_id: ServedGateway(gateway_id) for gateway_id in gateway_ids}

    def get(self, gateway_id: str) -> ServedGateway | None:
        return self.gateways.get(gateway_id)

    def update(self, gateway_id: str, catalog: Catalog, routes: Iterable[str] = ()) -> bool:
        return self.gateways[gateway_id].update(catalog, routes)

    def close(self) -> None:
        for served in self.gateways.values():
            served.close()

    @property
    def waiting(self) -> int:
        return sum(served.waiting for served in self.gateways.values())

    def series(self) -> list[tuple[str, int, int]]:
        """For /metrics: each gateway, its long-polls held now, its versions served."""
        return [(gateway_id, served.waiting, served.versions) for gateway_id, served in self.gateways.items()]

    def index(self) -> list[dict[str, object]]:
        """`GET /v1/catalogs`: each gateway, its version (None without a good list yet), its models."""
        return [
            {
                "gateway": gateway_id,
                "version": None if served.current is None else served.current.version,
                "models": 0 if served.current is None else served.current.models,
            }
            for gateway_id, served in self.gateways.items()
        ]
