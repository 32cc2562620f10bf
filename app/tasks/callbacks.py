"""callback_url: the final task JSON POSTed to the client, HMAC-SHA256 signed, retried with backoff.

The service's own connections go through the same address guard as downloads: the host is
resolved, every address checked against the allow-list, and aiohttp connects to those checked
addresses only (no second lookup that DNS rebinding could answer differently). Redirects are not followed.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

import app
from app.settings import Networks, Settings
from app.store.records import FINISHED, TaskRecord
from app.tasks import address_guard
from app.tasks.retry import TRANSIENT_HTTP_STATUSES, backoff_s

TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Video-Api-Signature"
TIMESTAMP_HEADER = "X-Video-Api-Timestamp"
log = logging.getLogger(__name__)


def callback_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What the receiver recomputes: hex HMAC-SHA256 of "<timestamp>.<body>" with the shared secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _GuardedResolver(AbstractResolver):
    def __init__(self, allow: Networks) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        address_guard.check_resolved(host, [info["host"] for info in infos], self._allow)
        return infos

    async def close(self) -> None:
        await self._inner.close()


class Callbacks:
    """Listens to task events; for each task that ends with a callback_url, one delivery."""

    def __init__(self, settings: Settings, render: Callable[[TaskRecord], bytes]) -> None:
        self.settings = settings
        self.render = render  # task record -> the JSON body clients see for it (the API's task view)
        self._sent: set[str] = set()
        self._deliveries: set[asyncio.Task[bool]] = set()

    def on_task(self, task: TaskRecord) -> None:
        url = (task.get("options") or {}).get("callback_url")
        if not url or task["status"] not in FINISHED or task["id"] in self._sent:
            return
        self._sent.add(task["id"])
        delivery = asyncio.get_running_loop().create_task(self.deliver(url, task))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def close(self) -> None:
        for delivery in list(self._deliveries):
            delivery.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def deliver(self, url: str, task: TaskRecord) -> bool:
        body = self.render(task)
        attempts, delay = self.settings.callback_attempts, self.settings.retry_delay_s
        connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self.settings.allow_networks), use_dns_cache=False)
        async with aiohttp.ClientSession(
            connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
        ) as session:
            for attempt in range(1, attempts + 1):
                outcome, retry = await self._post(session, url, task["id"], body)
                if not retry:
                    log.info("task %s: callback %s (attempt %d)", task["id"], outcome, attempt)
                    return outcome == "delivered"
                if attempt < attempts:
                    wait = backoff_s(delay, attempt)
                    log.info("task %s: callback %s; retry in %g s", task["id"], outcome, wait)
                    await asyncio.sleep(wait)
        log.warning("task %s: callback given up after %d attempts (%s)", task["id"], attempts, outcome)
        return False

    async def _post(self, session: aiohttp.ClientSession, url: str, task_id: str, body: bytes) -> tuple[str, bool]:
        """(what happened, worth retrying)."""
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            # aiohttp skips the resolver for IP literals: check those here.
            ipaddress.ip_address(host)
            address_guard.check_resolved(host, [host], self.settings.allow_networks)
        except ValueError:
            pass
        except address_guard.BlockedAddressError as exc:
            return f"refused: {exc}", False
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"video-download-api/{app.__version__}",
            "X-Video-Api-Task": task_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: "sha256=" + callback_signature(self.settings.callback_secret, timestamp, body),
        }
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
        except address_guard.BlockedAddressError as exc:
            return f"refused: {exc}", False
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, address_guard.BlockedAddressError):
                return f"refused: {exc.os_error}", False
            return f"failed: {exc}", True
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"failed: {type(exc).__name__}: {exc}", True
        if 200 <= status < 300:
            return "delivered", False
        return f"answered HTTP {status}", status in TRANSIENT_HTTP_STATUSES
