"""The service extensions a server lists in its EHLO reply (RFC 5321 §4.1.1.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._reply import Reply


@dataclass
class Extensions:
    """Keywords (upper-cased) mapped to their parameter text."""

    keywords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Extensions:
        """Parse an EHLO/LHLO reply; its first line is the greeting, not a keyword."""
        keywords: dict[str, str] = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                # Old servers announce "AUTH=LOGIN PLAIN" as well as "AUTH LOGIN PLAIN".
                if keyword.upper().startswith("AUTH="):
                    keyword, params = "AUTH", keyword[5:] + " " + params
                name = keyword.upper()
                if name == "AUTH" and name in keywords:
                    params = keywords[name] + " " + params
                keywords[name] = params.strip()
        return cls(keywords)

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def auth_mechanisms(self) -> list[str]:
        """The SASL mechanisms offered, in the server's order, without duplicates."""
        seen: list[str] = []
        for name in self.keywords.get("AUTH", "").upper().split():
            if name not in seen:
                seen.append(name)
        return seen

    @property
    def size_limit(self) -> int | None:
        """The server's message size limit in bytes (RFC 1870); None or 0 means no limit."""
        value = self.keywords.get("SIZE")
        if value is None:
            return None
        try:
            return int(value.split()[0]) if value else 0
        except ValueError:
            return 0
