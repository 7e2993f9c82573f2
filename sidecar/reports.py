"""What the sidecar says of itself: `/readyz` (readiness) and `/v1/status`, from the parts the
supervisor wires together."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sidecar.failing import FailingModels
from sidecar.gateway.client import GatewayClient
from sidecar.opencode.apply import Applier
from sidecar.opencode.handle import OpencodeHandle
from sidecar.reconcile import Reconciler
from sidecar.settings import Settings
from sidecar.traffic import ModelTraffic


@dataclass(frozen=True)
class Reports:
    settings: Settings
    reconciler: Reconciler
    gateways: dict[str, GatewayClient]
    child: OpencodeHandle
    applier: Applier
    traffic: ModelTraffic
    failing: FailingModels

    def gateway_reports(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        reports = {}
        for gateway in self.settings.gateways:
            state = self.reconciler.gateways[gateway.id]
            reports[gateway.id] = {
                **state.report(now, gateway.poll_interval),
                "format": self.gateways[gateway.id].detected_format or gateway.format,
                "poll_interval": gateway.poll_interval,
                # Fleet mode: the hub sidecar the list comes from (the last_error is then the hub's).
                **({"catalog_from": gateway.catalog_url} if gateway.catalog_url is not None else {}),
            }
        return reports

    def readiness(self) -> dict[str, Any]:
        """Ready while opencode is up and has the current config (catalog-only mode: once every
        gateway has a good list); a stale catalog is reported, not a reason to take the pod out of service."""
        gateways = self.gateway_reports()
        report = {
            "opencode_healthy": self.child.healthy,
            "opencode_restarts": self.child.restarts,
            "catalog_applied": self.applier.applied,
            "models": len(self.reconciler.catalog),
            "last_poll_ok": self.reconciler.last_poll_ok,
            "stale_gateways": sorted(gid for gid, report in gateways.items() if report["stale"]),
            "write_error": self.reconciler.last_write_error,
            "gateways": gateways,
        }
        return {"ready": self.ready(), **report}

    def ready(self) -> bool:
        """opencode up with the current config; in catalog-only mode, every gateway's list served."""
        if self.settings.catalog_only:
            return all(served.current is not None for served in self.reconciler.served.gateways.values())
        return self.child.healthy and self.applier.applied

    def status(self) -> dict[str, Any]:
        """Everything an operator asks when something looks wrong: `GET /v1/status`."""
        return {
            "ready": self.ready(),
            "catalog_only": self.settings.catalog_only,
            "models": len(self.reconciler.catalog),
            "gateways": self.gateway_reports(),
            "opencode": {**self.child.report(), "url": self.settings.opencode_base},
            "reloads": self.applier.report(),
            "traffic": self.traffic.report(),
            "failing": self.failing.report(),
            "state_dir": {"path": str(self.settings.state_dir), "write_error": self.reconciler.last_write_error},
        }
