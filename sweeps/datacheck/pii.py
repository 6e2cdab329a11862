"""Personal data and secrets in rows: e-mail addresses, phone numbers, payment-card numbers
(Luhn-checked), IP addresses and API-key-like strings, by pattern.

Patterns, not a trained recogniser: they find the common shapes and miss names and postal
addresses. What is reported is a count per kind and the rows (``file:line``) where each was
found, never the matched text, so the report itself leaks nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["KINDS", "PiiFindings", "luhn_valid", "scan"]

KINDS = ("email", "phone", "credit_card", "ip_address", "api_key")
"""What is looked for, in report order."""

# One pattern per kind, each tried only on rows that hold its cheap sign (most rows hold none).
_PATTERNS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b"),
    "phone": re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}(?!\w)"
    ),
    "credit_card": re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
    "ip_address": re.compile(
        r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"
    ),
    # API keys: well-known prefixes (OpenAI/Anthropic sk-, AWS, GitHub, Slack, Google, Stripe).
    "api_key": re.compile(
        r"\b(?:sk-(?:ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|(?:sk|rk)_live_[A-Za-z0-9]{20,})\b"
    ),
}
_KEY_PREFIX = re.compile(r"sk-|AKIA|gh[pousr]_|xox|AIza|_live_")
_NUMBER = re.compile(r"\d[\d .()+-]{6,}\d")  # phone, card and IPv4 numbers all look so


@dataclass
class PiiFindings:
    """Counts per kind, and up to ``keep`` row sources per kind."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rows: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    keep: int = 5

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, source: str) -> None:
        self.counts[kind] += 1
        if len(self.rows[kind]) < self.keep and source not in self.rows[kind]:
            self.rows[kind].append(source)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment-card number satisfies (ISO/IEC 7812-1, annex B)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_match(kind: str, text: str) -> bool:
    if kind == "credit_card":
        digits = re.sub(r"[ -]", "", text)
        return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)
    if kind == "ip_address":
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return not (address.is_loopback or address.is_unspecified)
    if kind == "phone":
        return 9 <= sum(c.isdigit() for c in text) <= 15
    return True


def _kinds_to_try(text: str) -> list[str]:
    """The kinds whose cheap sign ``text`` holds (str searches first: most rows hold none)."""
    kinds = []
    if "@" in text:
        kinds.append("email")
    if _KEY_PREFIX.search(text):
        kinds.append("api_key")
    if _NUMBER.search(text):
        kinds += ["credit_card", "ip_address", "phone"]
    elif ":" in text:
        kinds.append("ip_address")  # IPv6
    return kinds


def scan(rows: Iterable[tuple[str, str]], *, keep: int = 5) -> PiiFindings:
    """Scan ``(source, text)`` rows; each match that passes its kind's check is counted."""
    findings = PiiFindings(keep=keep)
    for source, text in rows:
        kinds = _kinds_to_try(text)
        if not kinds:
            continue
        taken: list[tuple[int, int]] = []  # digits read as a card or an address are no phone
        for kind in kinds:
            for match in _PATTERNS[kind].finditer(text):
                start, end = match.span()
                if any(start < b and a < end for a, b in taken):
                    continue
                taken.append((start, end))
                if _is_match(kind, match.group()):
                    findings.add(kind, source)
    return findings
