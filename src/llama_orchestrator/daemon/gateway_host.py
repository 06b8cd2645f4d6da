"""The gateway inside the daemon: settings from ``gateway.json``, requests on the bus.

The daemon supervises whether or not the gateway listens: an invalid ``gateway.json``,
``"enabled": false`` or a port held by another program leave it off, with the reason
kept for ``llama-orch gateway status`` and recorded in the state store (meta key
``gateway``) for ``ps``, which reads the records without asking the daemon.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llama_orchestrator.config.gateway import GatewayConfig, load_gateway
from llama_orchestrator.config.loader import ConfigError
from llama_orchestrator.daemon.api.metrics import install as install_metrics
from llama_orchestrator.daemon.api.metrics_watch import Watches
from llama_orchestrator.daemon.budget import Budget
from llama_orchestrator.daemon.directory import ActorDirectory
from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.daemon.gateway_reload import SourceKey, retune, settle, source_key
from llama_orchestrator.daemon.ledger import InFlightLedger
from llama_orchestrator.daemon.seats import ActorSeats, GatewayQueues
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.records import RequestRecord
from llama_orchestrator.gateway.settings import GatewaySettings

log = logging.getLogger("llama_orchestrator.gateway")

META_KEY = "gateway"
SPEED_KEPT_S = 60.0  # a decode speed older than this is no longer shown


class GatewayHost:
    def __init__(
        self,
        sup: Supervisor,
        seats: ActorSeats,
        queues: GatewayQueues,
        watches: Watches,
        ledger: InFlightLedger | None = None,
    ) -> None:
        self.sup = sup
        self.ledger = ledger or InFlightLedger()  # requests in flight, for a crash's count
        self.directory = ActorDirectory(sup, self.ledger)
        self._seats = seats  # gateway.json's default ttl applies to them
        self._queues = queues  # the seats count the queues of the gateway that listens
        self._watches = watches  # the supervisor's side of /metrics
        sup.bus.add_sink(self._on_event)
        self.gateway: Gateway | None = None
        self.settings: GatewaySettings | None = None
        self.reason: str | None = "not started"
        # the last decode speed each instance reported (tokens/s, when), for `stats`
        self._speed: dict[str, tuple[float, float]] = {}
        # what the settings in force were read from (hot reload, issue 11)
        self._keys_file: Path | None = None
        self._source: SourceKey | None = None

    def _settings(self) -> GatewaySettings | None:
        try:
            loaded = load_gateway(self.sup.home)
        except ConfigError as e:
            self.reason = f"invalid gateway.json: {e.problems[0] if e.problems else e}"
            return None
        cfg = loaded.config
        self._keys_file = loaded.keys_file
        self.apply_budgets(cfg)
        if not cfg.enabled:
            self.reason = f'disabled ("enabled": false in {loaded.path})'
            return None
        return GatewaySettings(
            host=cfg.host,
            port=cfg.port,
            api_keys=loaded.api_keys,
            load_timeout=float(cfg.load_timeout),
            queue_max_per_model=cfg.queue.max_per_model,
            queue_timeout=float(cfg.queue.timeout),
            max_body_bytes=cfg.max_body_mb * 1024 * 1024,
            metrics_public=cfg.metrics_public,
            affinity=cfg.affinity,
            allowed_origins=tuple(cfg.allowed_origins),
        )

    def apply_budgets(self, cfg: GatewayConfig) -> None:
        """Budgets, idle ttl and the wait for room, to the scheduler (they hold whether or
        not the gateway listens: `up` by hand respects them too)."""
        budget = Budget(cfg.max_running, dict(cfg.memory_budget_mb))
        self.sup.scheduler.configure(budget, float(cfg.load_timeout))
        self._seats.configure(cfg.default_ttl)
        if self.sup.ctx.kv is not None:
            kv = cfg.kv_cache
            self.sup.ctx.kv.configure(kv.max_mb, kv.ttl_s, kv.min_tokens)

    async def start(self) -> None:
        self.settings = self._settings()
        self._source = source_key(self.sup.home.gateway_path, self._keys_file)
        if self.sup.ctx.kv is not None:  # the saved slots' bytes, on /metrics from the start
            await self.sup.ctx.kv.load()
        await self._listen()
        self._record()

    async def _listen(self) -> None:
        if self.settings is not None:
            gateway = Gateway(self.directory, self.settings, on_request=self._on_request)
            install_metrics(gateway.metrics, self.sup, self._watches)
            try:
                await gateway.start()
            except (OSError, ValueError) as e:
                self.reason = gateway.error or str(e)
                holder = self._port_of_instance(self.settings.port)
                if isinstance(e, OSError) and e.errno in (98, 48, 10048) and holder:
                    # not "another program": the home's own instance (issue 19)
                    self.reason = (
                        f"cannot listen on {self.settings.host}:{self.settings.port}: it is "
                        f"instance {holder!r}'s server.port; give that instance another port, "
                        "or set gateway.json 'port'"
                    )
            else:
                self.gateway, self.reason = gateway, None
                self._queues.follow(gateway.router)  # drains count its queues
                # health checks carry the gateway's mark: a remote instance whose URL is
                # this gateway answers them 508, so its `up` fails saying why
                self.sup.ctx.http.headers["X-Llama-Orch-Via"] = gateway.hop.decode()
                log.info("gateway listening on %s", gateway.url)
        if self.reason is not None:
            log.warning("gateway not listening: %s", self.reason)

    def _port_of_instance(self, port: int) -> str | None:
        """The instance of this home configured on ``port``, if any."""
        for view in self.directory.instances():
            loaded = self.directory.config(view.name)
            if loaded is not None and loaded.config.server.port == port:
                return view.name
        return None

    async def reload(self) -> str | None:
        """``gateway.json`` (or its keys file) changed: apply it, keeping the listener
        (daemon/gateway_reload.py). Returns what became of it; None when unchanged."""
        key = source_key(self.sup.home.gateway_path, self._keys_file)
        if key == self._source:
            return None
        self._source = key
        listening, reason = self.gateway, self.reason
        new = self._settings()  # the budgets apply in here, whether or not it listens
        self._source = source_key(self.sup.home.gateway_path, self._keys_file)
        if listening is None:  # not listening: start it as a daemon start would
            self.settings = new
            await self._listen()
            self._record()
            now = f"listening on {self.gateway.url}" if self.gateway else f"off: {self.reason}"
            return self._said("applied", f"gateway.json applied; the gateway is {now}")
        if new is None:  # invalid, or disabled: it listens on with what it has
            problem, self.reason = self.reason or "", reason
            if problem.startswith("invalid"):
                return self._said("invalid", f"{problem}; the gateway keeps its settings")
            return self._said("applied", f"{problem}: takes effect at the next daemon start")
        assert self.settings is not None
        kept, notes = settle(self.settings, new)
        if kept is None:
            return self._said("refused", "gateway.json: " + "; ".join(notes))
        retune(listening, kept)
        self.settings = kept
        self._record()
        why = "gateway.json applied (api keys, queue limits, load_timeout, budgets)"
        return self._said("applied", "; ".join([why, *notes]))

    def forget(self, name: str) -> None:
        """``rm``: the instance's routes go at once (not when the index next expires),
        and a folder of that name gets a new view."""
        self.directory.forget(name)
        self.routes_changed()

    def routes_changed(self) -> None:
        """Instances added, changed or removed (daemon/reload.py): new routes now."""
        if self.gateway is not None:
            self.gateway.router.refresh()

    def _said(self, outcome: str, why: str) -> str:
        self.sup.bus.emit("", EventKind.CONFIG, None, None, why)
        log.info("%s", why)
        return outcome

    def _on_event(self, event: Event) -> None:
        """A state change wakes the requests waiting for that instance at once."""
        if event.kind is EventKind.STATE and self.gateway is not None:
            self.gateway.router.poke(event.instance)

    def _record(self) -> None:
        status = self.status()
        keep = {k: status.get(k) for k in ("url", "listening", "reason", "keys")}
        self.sup.store.meta_set(META_KEY, json.dumps(keep))

    def _on_request(self, record: RequestRecord) -> None:
        if record.instance and record.tokens_per_s:
            self._speed[record.instance] = (record.tokens_per_s, self.sup.ctx.clock.monotonic())
        data = asdict(record)
        reason = f"{record.method} {record.path} -> {record.status}"
        self.sup.bus.emit(record.instance or "", EventKind.REQUEST, None, None, reason, data=data)

    def status(self) -> dict[str, Any]:
        if self.gateway is not None:
            now = self.sup.ctx.clock.monotonic()
            speed = {n: round(v, 1) for n, (v, t) in self._speed.items() if now - t < SPEED_KEPT_S}
            return {**self.gateway.status(), "reason": None, "tokens_per_s": speed}
        url = self.settings.url if self.settings is not None else None
        return {"url": url, "listening": False, "reason": self.reason, "keys": 0}

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
            self.gateway = None
            self.reason = "the daemon stopped"
        self._record()
