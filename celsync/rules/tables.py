"""The two rule tables of SPEC §5 as data: (cause, dial status) → result → CRM statuses.

Both are first-match-wins lists. An install can put its own rows in front of the defaults
through the ``statuses:`` config key::

    statuses:
      results:                      # tried before the SPEC §5.2 rows
        - {cause: [31], dial: any, result: 200}
      crm:                          # tried before the SPEC §5.4 rows
        - {result: 603, bitrix24: "603-S", kommo: 2, kommo_result: "Rejected by callee"}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal

ANY = "any"

#: SPEC §5.2. ``cause``/``dial`` are lists or "any"; "" stands for an empty or absent status.
DEFAULT_RESULT_RULES: tuple[dict[str, Any], ...] = (
    {"cause": [0], "dial": ANY, "result": 0},
    {"cause": ANY, "dial": ["CANCEL"], "result": 480},
    {"cause": ANY, "dial": ["CHANUNAVAIL", "CONGESTION"], "result": 500},
    {"cause": [1, 20], "dial": ["ANSWER"], "result": 200},
    {"cause": [1, 20], "dial": ANY, "result": 404},
    {"cause": [16], "dial": ["", "ANSWER"], "result": 200},
    {"cause": [16], "dial": ["NOANSWER"], "result": 408},
    {"cause": [16], "dial": ["BUSY"], "result": 486},
    {"cause": [17], "dial": ANY, "result": 486},
    {"cause": [18], "dial": ANY, "result": 408},
    {"cause": [19], "dial": ANY, "result": 480},
    {"cause": [21], "dial": ANY, "result": 603},
    {"cause": [26], "dial": ANY, "result": 200},
    {"cause": [28], "dial": ANY, "result": 484},
    {"cause": [34, 38, 127], "dial": ANY, "result": 500},
    {"cause": [44], "dial": ["ANSWER"], "result": 200},
    {"cause": [44], "dial": ANY, "result": 500},
    {"cause": [58], "dial": ANY, "result": 488},
    {"cause": [66], "dial": ["ANSWER"], "result": 200},
    {"cause": [66], "dial": ANY, "result": 405},
)

#: SPEC §5.4. ``when``: always | incoming_unanswered | answered | unanswered.
#: ``kommo: null`` is the "unknown rule": 4 if answered, else 6.
DEFAULT_CRM_RULES: tuple[dict[str, Any], ...] = (
    {"result": 200, "when": "incoming_unanswered", "bitrix24": "304", "kommo": 6, "kommo_result": "Missed call"},
    {"result": 200, "bitrix24": "200", "kommo": 4, "kommo_result": "Success call"},
    {"result": 404, "bitrix24": "404", "kommo": 5, "kommo_result": "Number out of service"},
    {"result": 405, "bitrix24": "405", "kommo": None, "kommo_result": "Method not supported"},
    {"result": 408, "bitrix24": "304", "kommo": 3, "kommo_result": "Subscriber did not answer"},
    {"result": 480, "bitrix24": "304", "kommo": 3, "kommo_result": "Subscriber did not answer"},
    {"result": 484, "bitrix24": "484", "kommo": 5, "kommo_result": "Invalid number"},
    {"result": 486, "when": "incoming_unanswered", "bitrix24": "304", "kommo": 6, "kommo_result": "Number busy"},
    {"result": 486, "bitrix24": "486", "kommo": 7, "kommo_result": "Number busy"},
    {"result": 488, "bitrix24": "484", "kommo": 5, "kommo_result": "Carrier error"},
    {"result": 500, "bitrix24": "500", "kommo": None, "kommo_result": "Server error"},
    {"result": 603, "bitrix24": "603", "kommo": 2, "kommo_result": "Call rejected"},
    {"result": 0, "when": "answered", "bitrix24": "200", "kommo": 4, "kommo_result": "Success call"},
    {"result": 0, "when": "unanswered", "bitrix24": "304", "kommo": 6, "kommo_result": "Missed call"},
)

Condition = Literal["always", "incoming_unanswered", "answered", "unanswered"]
_CONDITIONS = ("always", "incoming_unanswered", "answered", "unanswered")


@dataclass(frozen=True, slots=True)
class ResultRule:
    causes: frozenset[int] | None  # None = any
    dials: frozenset[str] | None  # None = any
    result: int

    def matches(self, cause: int, dial: str) -> bool:
        return (self.causes is None or cause in self.causes) and (self.dials is None or dial in self.dials)

    def describe(self) -> str:
        c = "any" if self.causes is None else ",".join(str(x) for x in sorted(self.causes))
        d = "any" if self.dials is None else ",".join(repr(x) if x == "" else x for x in sorted(self.dials))
        return f"cause {c} + dial status {d} -> {self.result}"


@dataclass(frozen=True, slots=True)
class CrmRule:
    result: int
    when: Condition
    bitrix24: str
    kommo: int | None
    kommo_result: str

    def applies(self, result: int, incoming: bool, answered: bool) -> bool:
        if result != self.result:
            return False
        return {
            "always": True,
            "incoming_unanswered": incoming and not answered,
            "answered": answered,
            "unanswered": not answered,
        }[self.when]


@dataclass(frozen=True, slots=True)
class CrmStatus:
    bitrix24: str
    kommo: int
    kommo_result: str
    rule: str


def _parse_result_rule(raw: dict[str, Any], where: str) -> ResultRule:
    if not isinstance(raw, dict) or set(raw) - {"cause", "dial", "result"} or "result" not in raw:
        raise ValueError(f"{where}: expected {{cause: [..]|any, dial: [..]|any, result: N}}, got {raw!r}")
    cause, dial = raw.get("cause", ANY), raw.get("dial", ANY)
    causes = None if cause == ANY else frozenset(int(c) for c in _as_list(cause, where))
    dials = None if dial == ANY else frozenset(str(d or "").upper() for d in _as_list(dial, where))
    return ResultRule(causes, dials, int(raw["result"]))


def _parse_crm_rule(raw: dict[str, Any], where: str) -> CrmRule:
    allowed = {"result", "when", "bitrix24", "kommo", "kommo_result"}
    if not isinstance(raw, dict) or set(raw) - allowed or not {"result", "bitrix24", "kommo_result"} <= set(raw):
        raise ValueError(f"{where}: expected {{result, when?, bitrix24, kommo, kommo_result}}, got {raw!r}")
    when = raw.get("when", "always")
    if when not in _CONDITIONS:
        raise ValueError(f"{where}: 'when' must be one of {', '.join(_CONDITIONS)}, got {when!r}")
    kommo = raw.get("kommo")
    return CrmRule(int(raw["result"]), when, str(raw["bitrix24"]), None if kommo is None else int(kommo),
                   str(raw["kommo_result"]))


def _as_list(v: Any, where: str) -> Iterable[Any]:
    if isinstance(v, (list, tuple)):
        return v
    if isinstance(v, (int, str)):
        return [v]
    raise ValueError(f"{where}: {v!r} is neither a list nor 'any'")


@dataclass(frozen=True, slots=True)
class StatusTables:
    results: tuple[ResultRule, ...]
    crm: tuple[CrmRule, ...]

    @classmethod
    def from_config(cls, overrides: dict[str, Any] | None = None) -> "StatusTables":
        """Defaults, with the config's own rows tried first. Raises ValueError naming the row."""
        overrides = overrides or {}
        unknown = set(overrides) - {"results", "crm"}
        if unknown:
            raise ValueError(f"statuses: unknown key(s) {sorted(unknown)}; use 'results' and/or 'crm'")
        results = [
            _parse_result_rule(r, f"statuses.results[{i}]") for i, r in enumerate(overrides.get("results") or [])
        ] + [_parse_result_rule(r, "default") for r in DEFAULT_RESULT_RULES]
        crm = [
            _parse_crm_rule(r, f"statuses.crm[{i}]") for i, r in enumerate(overrides.get("crm") or [])
        ] + [_parse_crm_rule(r, "default") for r in DEFAULT_CRM_RULES]
        return cls(tuple(results), tuple(crm))

    def result(self, cause: int | None, dial: str | None) -> tuple[int, str]:
        """The SIP-style result and the rule that gave it. No cause at all means unknown (0)."""
        if cause is None:
            return 0, "no hangup cause known (degraded mode or no HANGUP row) -> 0"
        d = (dial or "").upper()
        for rule in self.results:
            if rule.matches(cause, d):
                return rule.result, rule.describe()
        return 0, f"cause {cause} + dial status {d or repr('')} is in no row -> 0"

    def crm_status(self, result: int, *, incoming: bool, answered: bool) -> CrmStatus:
        """Bitrix24 and Kommo statuses for a result (SPEC §5.3, §5.4)."""
        for rule in self.crm:
            if rule.applies(result, incoming, answered):
                kommo = rule.kommo if rule.kommo is not None else (4 if answered else 6)
                return CrmStatus(rule.bitrix24, kommo, rule.kommo_result, f"result {result} ({rule.when})")
        # A result with no row of its own falls back to the two-status rule (SPEC §5.3).
        return self.crm_status(0, incoming=incoming, answered=answered)
