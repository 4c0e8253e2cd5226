"""Phone number normalisation: configured rewrites first, then E.164 through phonenumbers."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from celsync.config import NumbersConfig


class NumberRules:
    """``numbers:`` config compiled once. ``normalise`` is memoised: numbers repeat a lot."""

    def __init__(self, cfg: NumbersConfig) -> None:
        self._region = cfg.default_region
        self._rewrites = [(re.compile(r.match), r.replace) for r in cfg.rewrite]
        self.normalise = lru_cache(maxsize=65536)(self._normalise)

    def _normalise(self, raw: str | None) -> str | None:
        """E.164 (``+79161234567``) where the number parses as valid, else the cleaned input.

        The first rewrite whose ``match`` matches is applied (``re.sub`` template syntax,
        e.g. ``{match: '^9(\\d{10})$', replace: '+7\\1'}``).
        """
        if not raw:
            return None
        number = raw.strip()
        for pattern, template in self._rewrites:
            if pattern.search(number):
                number = pattern.sub(template, number)
                break
        digits = re.sub(r"[\s\-().]", "", number)
        if not digits:
            return None
        if not re.fullmatch(r"\+?\d{5,}", digits):
            return digits  # an extension, a feature code or a name: keep as written
        candidates = [digits] if digits.startswith("+") else [digits, "+" + digits]
        for candidate in candidates:
            try:
                parsed = phonenumbers.parse(candidate, self._region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        return digits
