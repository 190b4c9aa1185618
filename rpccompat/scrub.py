"""Passwords never reach a screen or a log: one scrubber for every output.

What an operator sees quotes what they typed and what a driver said: a
misspelt ``--db_url`` in argparse's usage error, a URL in an exception, a
log line naming a broker.  :func:`scrub` is the one place such text passes
through.  It masks the password of anything shaped like a URL, whether
SQLAlchemy's or oslo.messaging's (several brokers, comma-separated), with a
typo in its scheme (``mysql:/root:pw@h``) or none at all, and with an
unencoded ``@`` in the password (everything up to the last ``@`` of the URL
is masked); it masks secrets in query strings (``?password=``); and it
replaces the passwords known from the configuration wherever they appear,
decoded or not, for drivers that quote them without their URL.

A password holding whitespace or a quote must be percent-encoded to be
found in free text (it has to be, to be a URL at all).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

MASK = "***"

# Runs of text a URL can be quoted in: a password holding whitespace or a
# quote must be percent-encoded to be found (it has to be, to be a URL).
_TOKEN = re.compile(r"[^\s'\"]+")
_QUERY_ITEM = re.compile(r"[?&;](?P<key>[\w.-]*)=(?P<value>[^&;\s'\"]*)")
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password masked: those in URLs and query strings,
    and ``secrets`` (see :func:`passwords`) wherever they appear."""
    shown, end = [], 0
    for start, stop in _merged(_secret_spans(text)):
        shown += [text[end:start], MASK]
        end = stop
    text = "".join([*shown, text[end:]])
    for secret in sorted(set(secrets), key=len, reverse=True):  # no partial leak
        text = text.replace(secret, MASK)
    return text


def _secret_spans(text: str) -> Iterator[tuple[int, int]]:
    """Where the passwords of ``text`` are, found on the text as written, in
    one pass over it (scrubbing must not be slower than linear: it sees every
    log line, and some quote what a peer sent)."""
    for token in _TOKEN.finditer(text):
        if span := _user_info_password(token.group()):
            yield token.start() + span[0], token.start() + span[1]
        for item in _QUERY_ITEM.finditer(token.group()):
            if item.group("value") and _SECRET_KEY.search(item.group("key")):
                yield token.start() + item.start("value"), token.start() + item.end()


def _user_info_password(token: str) -> tuple[int, int] | None:
    """The password in ``user:password@host``: from the first ``:`` that does
    not end a ``scheme://`` to the *last* ``@``, so that an unencoded ``@``
    leaves no tail of it, several brokers' passwords go at once, and a
    mistyped scheme (``mysql:/root:pw@h``) or none at all changes nothing.
    ``root://pw@h`` reads as a scheme and a user, as any reader would."""
    end = token.rfind("@")
    if end < 0:
        return None
    colon = token.find(":", 0, end)
    if colon >= 0 and token.startswith("://", colon):
        colon = token.find(":", colon + 3, end)
    return (colon + 1, end) if 0 <= colon < end - 1 else None


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


def passwords(*urls: str | None) -> list[str]:
    """The passwords in ``urls``, as written and decoded, for :func:`scrub`
    to find where a driver quotes them without their URL."""
    found = {
        url[start:stop]
        for url in filter(None, urls)
        for start, stop in _secret_spans(url)
    }
    return sorted({p for raw in found for p in (raw, unquote(raw)) if p})


class ScrubPasswords(logging.Filter):
    """Scrubs every record of the handler it is added to."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info:  # the traceback quotes URLs and drivers' errors too
            # Formatters print the cached exc_text; exc_info stays for other
            # handlers' filters, which read the exception itself.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(text, self.secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.secrets)
        return True


def scrub_process_output(secrets: Iterable[str] = ()) -> None:
    """From now on, this process's log records and the tracebacks of its
    uncaught exceptions (any thread) reach stderr scrubbed: for a process
    whose stderr an operator reads or a harness keeps."""
    secrets = list(secrets)

    def print_scrubbed(kind: type, error: BaseException | None, tb: Any) -> None:
        lines = traceback.format_exception(kind, error, tb)
        sys.stderr.write(scrub("".join(lines), secrets))

    sys.excepthook = print_scrubbed
    threading.excepthook = lambda e: print_scrubbed(
        e.exc_type, e.exc_value, e.exc_traceback
    )
    root: list[logging.Handler | None] = [*logging.getLogger().handlers]
    for handler in root or [logging.lastResort]:
        if handler is not None:
            handler.addFilter(ScrubPasswords(secrets))


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """argparse's errors (and oslo.config's, which uses it) as one scrubbed line.

    argparse prints its usage, then the arguments it refused as they were
    typed (a password in a misspelt ``--db_url``, a URL where a command was
    expected) and exits 2.  Here its stderr is held back while the command
    line is parsed: a refusal shows only its last line, scrubbed, with where
    to look next; anything else it wrote passes through scrubbed.
    """
    held = io.StringIO()
    refused = False
    try:
        with contextlib.redirect_stderr(held):
            yield
    except SystemExit as e:
        refused = e.code == 2 and bool(held.getvalue().strip())
        raise
    finally:
        if refused:
            last = held.getvalue().strip().splitlines()[-1]
            print(f"{scrub(last)}; see --help", file=sys.stderr)
        else:
            sys.stderr.write(scrub(held.getvalue()))
