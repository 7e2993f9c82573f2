"""Wires the parts together and owns the sidecar's lifetime and its signals."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx
import structlog
from watchfiles import awatch

from sidecar.catalog_only import NoDirectories, NoOpencode, OpencodeRoutes
from sidecar.http.exposure import BrowserPolicy
from sidecar.http.gateway_proxy import GatewayProxy
from sidecar.http.mcp import McpEndpoint, ModelTools
from sidecar.http.passthrough import Passthrough
from sidecar.http.websocket_passthrough import WebSocketPassthrough
from sidecar.http.routes import create_app
from sidecar.http.server import ApiServer, bind_socket
from sidecar.http.view import SidecarView
from sidecar.gateway.client import GatewayError, ModelRejected
from sidecar.failing import FailingModels, ListedStatuses, retry_failing
from sidecar.opencode.activity import ReloadActivity
from sidecar.opencode.apply import Applier
from sidecar.opencode.attached import AttachedOpencode
from sidecar.opencode.child import OpencodeChild
from sidecar.opencode.client import OpencodeClient, OpencodeError
from sidecar.opencode.config import BaseConfigError, load_base_config, write_atomically
from sidecar.opencode.handle import OpencodeHandle
from sidecar.opencode.plugin import mark_installed, plugin_path, plugin_source
from sidecar.opencode.spawn import OpencodeStartError, opencode_config_dir, resolve_binary
from sidecar.metrics import Metrics
from sidecar.naming import ModelRef
from sidecar.pruning import RegistryPruner
from sidecar.reconcile import Reconciler
from sidecar.registry import NoSessions
from sidecar.refresh import Refresh
from sidecar.reports import Reports
from sidecar.redact import Redactor
from sidecar.resolve import Resolver
from sidecar.settings import ENV_PREFIX, Settings
from sidecar.statedir import PRIVATE_FILE, StateDirError, claim_state_dir
from sidecar.statefiles import StatePaths
from sidecar.traffic import FIRST_BYTE_BUCKETS, ModelTraffic
from sidecar.wiring import gateway_clients, gateway_upstreams

log = structlog.get_logger("sidecar")


# Tries of attach mode's `GET /path` (5 s each) while opencode's first instance boots.
DIRECTORY_ATTEMPTS = 6


# The longest a stop waits for the held long-polls to be answered.
HELD_POLLS_GRACE = 1.0


class StartError(Exception):
    """The sidecar cannot start; the message says why in one line."""


class Sidecar:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings.with_password().with_gateway_token()
        self.directory = (self.settings.opencode_directory or Path.cwd()).resolve()
        try:
            base = load_base_config(self.settings.base_config)
        except BaseConfigError as exc:
            raise StartError(f"{ENV_PREFIX}BASE_CONFIG: {exc}") from None
        catalog_only = self.settings.catalog_only
        if not self.settings.attached and not catalog_only:
            try:
                resolve_binary(self.settings.opencode_bin)
            except OpencodeStartError as exc:
                raise StartError(str(exc)) from None
        # Before anything else touches the directory: a second sidecar must change nothing there,
        # least of all stop the first one's opencode as a stale one. Held until the process ends.
        try:
            self.state_dir_lock = claim_state_dir(self.settings.state_dir, shared=self._shared_files())
        except StateDirError as exc:
            raise StartError(f"{ENV_PREFIX}STATE_DIR: {exc}") from None
        try:
            probe = self.settings.state_dir / ".writable"
            write_atomically(probe, "")
            probe.unlink()
        except OSError as exc:
            raise StartError(
                f"{ENV_PREFIX}STATE_DIR: cannot write to {self.settings.state_dir}: {exc.strerror}"
            ) from None
        if self.settings.probe_models is not None:
            # Kept working, so that a deployment upgraded with it set behaves as before.
            log.warning("settings.deprecated", setting=f"{ENV_PREFIX}PROBE_MODELS",
                        instead=f"{ENV_PREFIX}UNLISTED_MODELS={self.settings.unlisted_policy}")
        self.gateways = gateway_clients(self.settings)
        self.paths = StatePaths(self.settings.state_dir, self.settings.opencode_config)
        if self.settings.instance_plugin and not catalog_only:
            self._install_plugin()
        secret = self.settings.opencode_password
        password = secret.get_secret_value() if secret is not None else None
        self.opencode = OpencodeClient(self.settings.opencode_base, password)
        self.child: OpencodeHandle
        # The applier marks what makes opencode read its config; the child's health check asks.
        activity = ReloadActivity()
        if catalog_only:
            self.child = NoOpencode()
        elif self.settings.attached:
            learn = self._adopt_opencode_directory if self.settings.opencode_directory is None else None
            self.child = AttachedOpencode(
                self.opencode,
                health_interval=self.settings.health_interval,
                health_failures=self.settings.health_failures,
                on_up=learn,
            )
        else:
            self.child = OpencodeChild(self.settings, self.paths.config, self.opencode, activity=activity)
        redact = Redactor(self.settings.secrets()).text
        # Listed models the gateway refuses: marked from the gateway route's answers and opencode's
        # events, refused by the resolver with the gateway's reason, retried in the background.
        self.failing = FailingModels(
            self._lists_ref, retry_initial=self.settings.failing_retry_initial,
            retry_max=self.settings.failing_retry_max, redact=redact,
        )
        self.applier = Applier(
            self.opencode,
            self.child,
            self.directory,
            max_directories=self.settings.max_directories,
            reload=self.settings.reload,
            reload_timeout=self.settings.reload_timeout,
            activity=activity,
            prompt_wait=self.settings.prompt_reload_wait,
            on_event=self.failing.note_event,
        )
        self.reconciler = Reconciler(
            self.settings, self.gateways, self.applier, self.paths, base, write=self._write_state_file,
            sessions=NoSessions() if catalog_only else self.opencode,
        )
        self.metrics = Metrics()
        # With no opencode, a model is usable once matched: nothing to wait for.
        usable = NoDirectories(str(self.directory)) if catalog_only else self.applier
        self.resolver = Resolver(
            self.settings, self.reconciler, usable, self.gateways,  # type: ignore[arg-type]
            observe=self.metrics.observe_resolve,
            failing=self.failing,
        )
        self.passthrough = Passthrough(
            self.opencode.base_url,
            password,
            self.resolver,
            self.settings.held_secrets(),
            limits=self.settings.passthrough_limits,
            seen_directory=self.applier.note_directory,
            prompt_gate=self.applier.gate,
        )
        # Registered models the gateway says it doesn't have are dropped (told by the traffic record).
        self.pruner = RegistryPruner(self.reconciler.is_registered, self.reconciler.unregister_ref)
        self.websockets = WebSocketPassthrough(
            self.opencode.base_url,
            password,
            self.settings.held_secrets(),
            max_websockets=self.settings.max_websockets,
            seen_directory=self.applier.note_directory,
        )
        # What the gateway route forwards, per gateway and model: for /metrics and /v1/status.
        self.traffic = ModelTraffic(
            self.reconciler.gateways, self._lists_model, redact=redact,
            on_error=self._refused, on_answer=self.failing.answered,
        )
        token = self.settings.gateway_token
        assert token is not None  # with_gateway_token
        # What opencode presents on the gateway routes; spawn.py hands it to the child.
        self.gateway_token = token.get_secret_value()
        self.gateway_proxy = GatewayProxy(
            gateway_upstreams(self.settings),
            token=self.gateway_token,
            traffic=self.traffic,
            idle_timeout=self.settings.gateway_idle_timeout,
        )
        # The MCP server at /mcp: the catalog and the resolver as an agent's tools.
        self.mcp = McpEndpoint(ModelTools(self.reconciler, self.resolver))
        self.api: ApiServer | None = None
        self.reports = Reports(
            self.settings, self.reconciler, self.gateways, self.child, self.applier, self.traffic, self.failing
        )
        self.metrics.watch(self.reconciler, self.applier, self.child)
        self.metrics.watch_traffic(self.traffic, FIRST_BYTE_BUCKETS)
        self.metrics.watch_failing(self.failing)
        self.metrics.watch_catalogs(self.reconciler.served)

    def _shared_files(self) -> set[Path]:
        # Attach mode's config and the plugin beside it are read by opencode in another container,
        # perhaps as another user; they hold references ({env:NAME}), never a key.
        config = self.settings.opencode_config
        return {config, plugin_path(config)} if self.settings.attached and config is not None else set()

    def _install_plugin(self) -> None:
        """The instance plugin beside opencode's config (opencode/plugin.py), and in spawn mode
        opencode's own config directory marked as holding what opencode installs before plugins."""
        path = plugin_path(self.paths.config)
        try:
            self._write_state_file(path, plugin_source(self.settings.sidecar_origin))
            if not self.settings.attached:
                mark_installed(opencode_config_dir(self.settings))
        except OSError as exc:
            raise StartError(f"{ENV_PREFIX}STATE_DIR: cannot write the instance plugin {path}: {exc.strerror}") from None

    def _write_state_file(self, path: Path, text: str) -> None:
        write_atomically(path, text, mode=0o644 if path in self._shared_files() else PRIVATE_FILE)

    async def _adopt_opencode_directory(self) -> None:
        """Attach mode: the default directory is wherever that opencode runs, on its filesystem."""
        for attempt in range(1, DIRECTORY_ATTEMPTS + 1):
            try:
                directory = await self.opencode.directory()
                break
            except httpx.TimeoutException as exc:
                # `/path` boots opencode's default instance: its first boot with a plugin waits for
                # opencode's npm install into its config directory (8 s with network, measured).
                log.warning("opencode.directory_unknown", error=type(exc).__name__, attempt=attempt)
            except (OpencodeError, httpx.HTTPError) as exc:
                log.warning("opencode.directory_unknown", error=str(exc) or type(exc).__name__)
                return
        else:
            return
        if directory is not None:
            self.applier.adopt_default_directory(directory)

    def _lists_model(self, gateway_id: str, model_id: str) -> bool:
        # Asked once per new model name, so two lookups rather than provider_catalog's new Catalog.
        listed = model_id in self.reconciler.gateways[gateway_id].catalog
        return listed or model_id in self.reconciler.registered.get(gateway_id, {})

    def _lists_ref(self, ref: ModelRef) -> bool:
        state = self.reconciler.gateways.get(ref.provider_id)
        return state is not None and ref.model_id in state.catalog

    def _refused(self, gateway: str, model: str, status: int | None, reason: str) -> None:
        # A registered model refused leaves the registry; a listed one is marked failing.
        self.pruner.refused(gateway, model, status, reason)
        self.failing.refused(gateway, model, status, reason)

    async def _probe_failing(self, ref: ModelRef) -> tuple[int | None, str] | None:
        gateway = self.gateways.get(ref.provider_id)
        if gateway is None:
            return None
        try:
            await gateway.probe(ref.model_id)
        except ModelRejected as exc:
            return exc.status, exc.reason
        except GatewayError as exc:
            return None, str(exc)
        return None

    async def run(self) -> None:
        host, port = self.settings.listen_host, self.settings.listen_port
        try:
            sock = bind_socket(host, port)
        except OSError as exc:
            raise StartError(f"{ENV_PREFIX}LISTEN: cannot listen on {host}:{port}: {exc.strerror}") from None
        api_key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        catalog_only = self.settings.catalog_only
        # Catalog-only mode: opencode's routes answer 404, and nothing is forwarded.
        refused = OpencodeRoutes(self.gateway_token)
        view = SidecarView(
            models=self.reconciler,
            resolver=self.resolver,
            passthrough=refused if catalog_only else self.passthrough,
            gateways=refused if catalog_only else self.gateway_proxy,
            refresher=Refresh(self.reconciler, self.applier, apply_timeout=self.settings.reload_timeout),
            mcp=self.mcp,
            instances=self.applier,
            websockets=refused if catalog_only else self.websockets,
            readiness=self.reports.readiness,
            status=self.reports.status,
            started=lambda: self.reconciler.config_on_disk,
            metrics=self.metrics.render,
            api_key=api_key,
            statuses=ListedStatuses(self.failing, self.reconciler.ref_of),
            catalogs=self.reconciler.served,
        )
        browsers = BrowserPolicy.for_listen(host, self.settings.allowed_hosts, self.settings.allowed_origins)
        self.api = ApiServer(create_app(view, browsers), sock, self.settings.connection_limits)
        log.info(
            "sidecar.starting",
            listen=f"{host}:{port}",
            gateways={gateway.id: gateway.api_base for gateway in self.settings.gateways},
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._stop_on_signal, group.cancel_scope)
                # The API first: /livez answers while a slow gateway holds up the first poll.
                group.start_soon(self._serve_api, self.api)
                if isinstance(self.child, OpencodeChild):
                    # An opencode left by a sidecar killed on this state directory holds our port.
                    await self.child.stop_stale()
                # A saved list goes to opencode at once; only gateways with none are waited for.
                saved = frozenset(gid for gid, state in self.reconciler.gateways.items() if state.restored)
                await self.reconciler.poll_all([gid for gid in self.reconciler.gateways if gid not in saved])
                await self.reconciler.publish()
                await group.start(self.child.run)
                if not catalog_only:
                    group.start_soon(self.applier.run)
                group.start_soon(self.reconciler.run, saved)
                group.start_soon(self._reread_on_sighup)
                group.start_soon(self.pruner.run)
                group.start_soon(retry_failing, self.failing, self._probe_failing)
                if self.settings.base_config is not None:
                    group.start_soon(self._watch_base_config, self.settings.base_config)
                log.info("sidecar.started", opencode=None if catalog_only else self.settings.opencode_base,
                         attached=self.settings.attached, catalog_only=catalog_only)
        finally:
            with anyio.CancelScope(shield=True):
                await self.child.stop()
                for gateway in self.gateways.values():
                    await gateway.aclose()
                await self.opencode.aclose()
                await self.passthrough.aclose()
                await self.gateway_proxy.aclose()
                sock.close()
                log.info("sidecar.stopped")

    async def _serve_api(self, api: ApiServer) -> None:
        # The MCP transport's session manager runs a task group for the requests it serves; the
        # app has no lifespan to start it (uvicorn runs it with lifespan="off"), so it spans the server.
        async with self.mcp.running():
            await api.run_until_stopped()

    async def _stop_on_signal(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("sidecar.stopping", signal=signal.Signals(signum).name)
                await self._answer_held_polls()
                scope.cancel()
                return

    async def _answer_held_polls(self) -> None:
        # Followers' held long-polls (GET /v1/catalogs/{id}?wait=) are answered 304 while the
        # server still runs: cut by the loop's end they would get a 500 and leave a traceback.
        # Then they ask again and find this hub gone, like any gateway down.
        served = self.reconciler.served
        served.close()
        with anyio.move_on_after(HELD_POLLS_GRACE):
            while served.waiting:
                await anyio.sleep(0.005)
            # Woken, each has its 304 to send: a few turns of the loop.
            await anyio.sleep(0.05)

    async def _reread_on_sighup(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                log.info("base_config.reread", reason="SIGHUP")
                self.reconciler.base_config_changed()

    async def _watch_base_config(self, path: Path) -> None:
        # The directory, not the file: editors replace the file, and Kubernetes updates a mounted
        # ConfigMap by swapping the `..data` symlink beside it, so the file's own path never
        # changes. Any change there re-reads the file; its content decides whether it changed.
        async for _changes in awatch(path.absolute().parent, debounce=300, recursive=False):
            self.reconciler.base_config_changed()
