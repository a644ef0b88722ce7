"""Where alerts go: Slack-compatible incoming webhooks per severity, from the policy's `alerts`.

alerts:
  webhooks: {critical: [{env: CIVICMETER_WEBHOOK_SECURITY}], high: ["https://..."]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from civicmeter.api.severity import Severity
from civicmeter.policy.document import check_keys, mapping, severity
from civicmeter.policy.yaml_source import At

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class WebhookTarget:
    """A Slack-compatible incoming webhook: a URL, or the environment variable holding one
    (webhook URLs are secrets; the environment keeps them out of the versioned file)."""

    url: str | None = None
    env: str | None = None

    def resolve(self, environ: Mapping[str, str]) -> str | None:
        return self.url if self.url is not None else environ.get(self.env or "") or None


@dataclass(frozen=True)
class AlertRouting:
    webhooks: Mapping[Severity, tuple[WebhookTarget, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    format: Literal["slack"] = "slack"

    def targets(self, severity: Severity) -> tuple[WebhookTarget, ...]:
        return self.webhooks.get(severity, ())


def parse_alerts(at: At, raw: Any) -> AlertRouting:
    block = mapping(at, raw)
    check_keys(at, block, ("webhooks", "format"))
    if block.get("format", "slack") != "slack":
        at.key(block, "format").fail("only slack (incoming-webhook JSON) is supported")
    hooks_at = at.key(block, "webhooks")
    hooks = mapping(hooks_at, block.get("webhooks") or {})
    routes: dict[Severity, tuple[WebhookTarget, ...]] = {}
    for level, targets in hooks.items():
        level_at = hooks_at.key(hooks, level)
        name = severity(level_at, level)
        if not isinstance(targets, list):
            level_at.fail("must be a list of URLs or {env: VARIABLE} entries")
        routes[name] = tuple(_webhook(level_at.item(targets, i), t) for i, t in enumerate(targets))
    return AlertRouting(MappingProxyType(routes))


def _webhook(at: At, raw: Any) -> WebhookTarget:
    if isinstance(raw, dict):
        check_keys(at, raw, ("env",))
        name = raw.get("env")
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            at.key(raw, "env").fail("must be an environment variable name")
        return WebhookTarget(env=name)
    if not isinstance(raw, str):
        at.fail("must be a URL or {env: VARIABLE}")
    parts = urlsplit(raw)
    if not parts.netloc or parts.scheme not in ("https", "http"):
        at.fail(f"{raw[:60]!r} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        at.fail("must be https (alerts name users and departments)")
    return WebhookTarget(url=raw)
