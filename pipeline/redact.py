"""Secrets out of URLs before they are stored, logged or printed.

A presigned URL carries its signature and credentials in the query string, and `scheme://user:password@host/...`
carries a password. ifcbflow records the URLs it was given (store attributes, reports, logs, error messages), so
every such place goes through `redact_url`: the password and every query value are replaced by `***`, the rest
(scheme, host, path, parameter names) stays so the URL still says what it points to.

Azure's secrets also travel outside URLs: a connection string (`...;AccountKey=<key>;...`,
`SharedAccessSignature=<token>`), a SAS token on its own (`sv=...&sig=<signature>`), a request's `Authorization:
SharedKey <account>:<signature>`, and the storage options that hold them (`account_key`, `sas_token`,
`connection_string`, `client_secret`). `redact_text` masks each of these in a message before its URLs.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
#: Secrets of Azure Storage in text, each with the part that stays (group 1): a connection string's account key or
#: SAS, a SAS token's signature, a Shared Key signature, and storage options that hold a secret (quoted values).
_SECRETS_IN_TEXT = (
    re.compile(r"((?:AccountKey|SharedAccessSignature)=)[^;\s'\"]+", re.IGNORECASE),
    re.compile(r"((?<![A-Za-z0-9_-])sig=)[^&;\s'\"]+", re.IGNORECASE),
    re.compile(r"(SharedKey(?:Lite)? [^:\s'\"]+:)[^\s'\"]+"),
    re.compile(
        r"""((?:account_key|sas_token|connection_string|client_secret)['"]?\s*[:=]\s*(['"]))(?:(?!\2).)*""",
        re.IGNORECASE,
    ),
)


def redact_url(url: str) -> str:
    """`url` without its password and query values; text that is not a URL comes back unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = "&".join(f"{quote(name, safe='')}={MASK}" for name, _ in pairs) if pairs else MASK
        return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not parseable as a URL: hide everything after the scheme's host part
        return url.split("?", 1)[0].split("@")[-1]


def redact_text(text: str) -> str:
    """`text` (an error message, a log line) with every URL and every Azure secret in it redacted."""
    for pattern in _SECRETS_IN_TEXT:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
