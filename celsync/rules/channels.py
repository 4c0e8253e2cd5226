"""Channel names → who the channel is: an extension, a trunk, or a Local helper.

Asterisk names channels ``TECH/resource-<hex>`` (``PJSIP/101-0000002a``, ``SIP/trunk-0000ab``,
``IAX2/101-1234``) and Local channels ``Local/<exten>@<context>-<hex>;<1|2>``. Which
resources are this PBX's extensions is configuration (SPEC §10 ``pbx:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from celsync.config import PbxConfig

_LOCAL = re.compile(r"^Local/(?P<exten>[^@]*)@(?P<context>.+?)-(?P<id>[0-9a-fA-F]+);(?P<half>[12])$")
_TECH = re.compile(r"^(?P<tech>[A-Za-z0-9_]+)/(?P<resource>.+?)(?:-(?P<seq>[0-9a-fA-F]+))?$")
# Dial targets: "PJSIP/101&PJSIP/102", "PJSIP/89161234567@trunk", "SIP/trunk/8916...", "Local/101@from-queue/n"
_DIAL_TARGET = re.compile(r"^(?P<tech>[A-Za-z0-9_]+)/(?P<rest>.+)$")


@dataclass(frozen=True, slots=True)
class Channel:
    """What a channel name says about its owner."""

    name: str
    kind: str  # extension | trunk | local | other
    extension: str | None = None  # the extension number for extension legs (and Local to one)
    endpoint: str | None = None  # TECH/resource without the sequence, e.g. "PJSIP/101"
    local_pair: str | None = None  # Local name without ";n", shared by both halves
    local_half: int | None = None
    local_exten: str | None = None
    local_context: str | None = None


class ChannelRules:
    """The compiled ``pbx:`` rules for naming channels; build once, call per leg."""

    def __init__(self, pbx: PbxConfig) -> None:
        self._ext = re.compile(pbx.extensions)
        self._ext_channels = [re.compile(p) for p in pbx.extension_channels]
        self._endpoints = dict(pbx.endpoints)
        self._trunks = [re.compile(p) for p in pbx.trunk_channels]
        self.classify = lru_cache(maxsize=65536)(self._classify)

    def is_extension(self, number: str | None) -> bool:
        return bool(number) and self._ext.search(number) is not None

    def _classify(self, name: str) -> Channel:
        m = _LOCAL.match(name)
        if m:
            exten = m.group("exten")
            return Channel(
                name, "local",
                extension=exten if self.is_extension(exten) else None,
                local_pair=name[: name.rfind(";")], local_half=int(m.group("half")),
                local_exten=exten, local_context=m.group("context"),
            )
        for pattern in self._ext_channels:
            em = pattern.search(name)
            if em:
                return Channel(name, "extension", extension=em.group("ext"), endpoint=_endpoint(name))
        endpoint = _endpoint(name)
        if endpoint in self._endpoints:
            return Channel(name, "extension", extension=self._endpoints[endpoint], endpoint=endpoint)
        if any(p.search(name) for p in self._trunks):
            return Channel(name, "trunk", endpoint=endpoint)
        tm = _TECH.match(name)
        if tm:
            resource = tm.group("resource")
            if self.is_extension(resource):
                return Channel(name, "extension", extension=resource, endpoint=endpoint)
            if not self._trunks:
                return Channel(name, "trunk", endpoint=endpoint)
        return Channel(name, "other", endpoint=endpoint)

    def dial_targets(self, appdata: str) -> list[str]:
        """Extension numbers (or raw numbers) a Dial's first argument asks for, in order."""
        targets: list[str] = []
        first = appdata.split(",", 1)[0]
        for part in first.split("&"):
            m = _DIAL_TARGET.match(part.strip())
            if not m:
                continue
            tech, rest = m.group("tech"), m.group("rest")
            if tech.lower() == "local":
                targets.append(rest.split("@", 1)[0])
                continue
            endpoint = f"{tech}/{rest.split('/', 1)[0].split('@', 1)[0]}"
            if endpoint in self._endpoints:
                targets.append(self._endpoints[endpoint])
                continue
            # PJSIP/101, PJSIP/89161234567@trunk, SIP/trunk/89161234567, IAX2/peer/101
            pieces = rest.replace("@", "/").split("/")
            number = next((p for p in pieces if self.is_extension(p)), None)
            if number is None:
                number = next((p for p in pieces if p.lstrip("+").isdigit()), pieces[0])
            targets.append(number)
        return targets


def _endpoint(name: str) -> str:
    m = _TECH.match(name)
    if not m:
        return name
    return f"{m.group('tech')}/{m.group('resource')}"
