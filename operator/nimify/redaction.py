"""Keeping credentials that travel inside URLs out of messages and logs.

A presigned URL carries its credential in the query string (X-Amz-Signature, sig=, token=), a URL with
user-info carries a password, and client libraries quote the URL they failed on (a redirect's target
included). The operator's own debug logs print whole NimServices, whose spec holds the model URI. So every
message the toolkit builds from a client's error, and every log record the operator writes, goes through
`redact` first.
"""

from __future__ import annotations

import logging
import re

# A URL's query string (and user-info before it), wherever one appears in a text; quotes end a URL.
_URL_WITH_QUERY = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/\s@?#'\"]*@)?(?P<rest>[^\s?#'\"]*)\?[^\s#'\"]*"
)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#'\"]*@")


def redact(text: str) -> str:
    """`text` with every URL's query string and user-info replaced by `<redacted>`."""
    text = _URL_WITH_QUERY.sub(lambda m: f"{m['scheme']}{m['rest']}?<redacted>", text)
    return _USERINFO.sub(lambda m: f"{m['scheme']}<redacted>@", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through `redact` (once formatted, so arguments are covered too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_logs(*loggers: str) -> None:
    """Redact what the root logger's handlers write and what the named loggers emit (their own handlers
    included: kopf turns `kopf.objects` records into Kubernetes Events)."""
    targets: list[logging.Handler | logging.Logger] = list(logging.getLogger().handlers)
    targets += [logging.getLogger(name) for name in loggers]
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
