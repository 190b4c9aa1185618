"""No password survives the scrubber, however its URL is written."""

from __future__ import annotations

import io
import logging
import random
import string
import urllib.parse

import pytest

from rpccompat.scrub import ScrubPasswords, passwords, scrub

SEED = random.randrange(10**6)
TRIES = 3000
# Letters and digits, plus what a URL gives a meaning to.  No whitespace, no
# quotes (a password holding them must be percent-encoded to be a URL at
# all) and no ``&`` (it ends a value in a query string).
ALPHABET = string.ascii_letters + string.digits + "@:/?#%!$-_.~"
SCHEMES = ["mysql+pymysql", "postgresql+psycopg2", "sqlite", "rabbit", "kombu+memory"]
HOSTS = ["127.0.0.1", "db.example.org:3306", "[::1]:5672", "localhost"]


def random_password(rng: random.Random) -> str:
    password = "".join(rng.choices(ALPHABET, k=rng.randint(6, 24)))
    # Without a scheme, ``root://pw@host`` *is* a scheme and a user: no
    # reader can take its ``//`` for the start of a password.
    return password if not password.startswith("//") else "x" + password


def with_credentials(rng: random.Random, password: str) -> str:
    """A URL, or a mistyped one, holding ``password`` in its user info."""
    user = rng.choice(["root", "guest", "nova_user", ""])
    written = rng.choice([password, urllib.parse.quote(password, safe="")])
    prefix = rng.choice([f"{rng.choice(SCHEMES)}://", f"{rng.choice(SCHEMES)}:/", ""])
    hosts = [f"{user}:{written}@{rng.choice(HOSTS)}"]
    if prefix.startswith("rabbit") or rng.random() < 0.2:  # several brokers
        hosts.append(f"other:{written}@{rng.choice(HOSTS)}")
    return f"{prefix}{','.join(hosts)}/{rng.choice(['db', 'vhost', ''])}"


def with_query_secret(rng: random.Random, password: str) -> str:
    """A URL whose query string holds ``password``."""
    key = rng.choice(["password", "passwd", "pass", "secret", "token", "PASSWORD"])
    query = [f"{key}={password}", "charset=utf8"]
    rng.shuffle(query)
    return f"{rng.choice(SCHEMES)}://root@{rng.choice(HOSTS)}/db?{'&'.join(query)}"


def in_a_message(rng: random.Random, url: str) -> str:
    """``url`` the way an error, a log or argparse quotes it."""
    return rng.choice(
        [
            "{}",
            "cannot use the database at {}: refused",
            "invalid choice: '{}' (choose from 'db', 'service')",
            'Could not parse SQLAlchemy URL from string "{}"',
            "unrecognized arguments: --db_url {} db check",
            "(url={})",
        ]
    ).format(url)


@pytest.mark.parametrize("make_url", [with_credentials, with_query_secret])
def test_a_random_password_never_survives_the_scrubber(make_url):
    rng = random.Random(SEED)
    for _ in range(TRIES):
        password = random_password(rng)
        url = make_url(rng, password)
        message = in_a_message(rng, url)
        for shown in (scrub(message), scrub(message, passwords(url))):
            for secret in (password, urllib.parse.quote(password, safe="")):
                assert secret not in shown, (
                    f"seed {SEED}: {secret!r} survives in {shown!r} (from {url!r})"
                )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("mysql+pymysql://root:pw@h/db", "mysql+pymysql://root:***@h/db"),
        ("mysql+pymysql://root:p@ss@h/db", "mysql+pymysql://root:***@h/db"),
        ("mysql+pymysql:/root:pw@h/db", "mysql+pymysql:***@h/db"),
        ("root:pw@h/db", "root:***@h/db"),
        ("rabbit://a:pw@h1,b:pw@h2/vh", "rabbit://a:***@h2/vh"),
        ("mysql://root@h/db?charset=utf8&password=pw", "mysql://root@h/db?charset=utf8&password=***"),
        ("mysql://root@h/db", "mysql://root@h/db"),
        ("rabbit://guest@h:5672/", "rabbit://guest@h:5672/"),
        ("at 12:30:01 a@b failed", "at 12:30:01 a@b failed"),
    ],
)  # fmt: skip
def test_a_url_keeps_what_is_not_secret(text, shown):
    assert scrub(text) == shown


def test_a_known_password_is_masked_even_without_its_url():
    url = "postgresql://u:p%40ssw0rd@h/db"
    assert passwords(url) == ["p%40ssw0rd", "p@ssw0rd"]
    assert scrub('password "p@ssw0rd" refused', passwords(url)) == (
        'password "***" refused'
    )


@pytest.mark.timeout(30)  # only to catch a hang: backtracking patterns took hours
@pytest.mark.parametrize("unit", ["a:", "a:b/", "?password", "?a=&", "?token=&"])
def test_a_long_line_without_a_password_comes_back_whole_without_hanging(unit):
    line = unit * 100_000
    assert scrub(line) == line


def test_a_logged_traceback_is_scrubbed_like_its_message():
    """LOG.exception's traceback quotes the URL a driver failed on."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubPasswords(["s3cret"]))
    log = logging.getLogger("tests.scrub")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("cannot reach mysql://root:s3cret@db/x")
        except ValueError:
            log.exception("heartbeat failed on %s", "mysql://root:s3cret@db/x")
    finally:
        log.removeHandler(handler)
    assert "Traceback" in stream.getvalue() and "ValueError" in stream.getvalue()
    assert "s3cret" not in stream.getvalue()
