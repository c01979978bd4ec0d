"""Credentials never shown: every form a URL or an option can hold one in."""

from __future__ import annotations

import logging

import pytest

from celeriac.utils.urls import mask_options, mask_password, redact, secrets_of


@pytest.mark.parametrize("url, masked", [
    # user:password@ and :password@
    ("redis://:s3cret@localhost:6379/0", "redis://:**@localhost:6379/0"),
    ("redis://user:s3cret@localhost:6379/0", "redis://user:**@localhost:6379/0"),
    ("rediss://:s3cret@cache.example.com:6380/0?ssl_cert_reqs=required",
     "rediss://:**@cache.example.com:6380/0?ssl_cert_reqs=required"),
    ("amqp://guest:s3cret@rabbit//", "amqp://guest:**@rabbit//"),
    ("db+postgresql://app:s3cret@db/results", "db+postgresql://app:**@db/results"),
    # a password percent-encoded, or with characters that end an authority unescaped
    ("redis://:p%40ss@h:6379/0", "redis://:**@h:6379/0"),
    ("redis://:pa/ss@h:6379/0", "redis://:**@h:6379/0"),
    ("redis://:pa?ss#x@h/0", "redis://:**@h/0"),
    ("redis://:p@ss@h/0", "redis://:**@h/0"),
    # in the query
    ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=**"),
    ("redis://h/0?db=2&password=s3cret&socket_timeout=3",
     "redis://h/0?db=2&password=**&socket_timeout=3"),
    ("redis+socket:///run/redis.sock?password=s3cret&virtual_host=1",
     "redis+socket:///run/redis.sock?password=**&virtual_host=1"),
    ("db+postgresql://app@db/r?sslpassword=s3cret", "db+postgresql://app@db/r?sslpassword=**"),
    ("sqs://?aws_secret_access_key=s3cret&region=x", "sqs://?aws_secret_access_key=**&region=x"),
    # both at once, and each URL of a fail-over list
    ("redis://u:one@h/0?password=two", "redis://u:**@h/0?password=**"),
    ("sentinel://:a1@h1:26379;sentinel://:b2@h2:26379",
     "sentinel://:**@h1:26379;sentinel://:**@h2:26379"),
])
def test_mask_password_hides_every_credential_form(url: str, masked: str) -> None:
    assert mask_password(url) == masked
    assert not ({"s3cret", "one", "two", "a1", "b2", "p%40ss", "pa/ss"} &
                set(mask_password(url).replace("@", " ").replace(":", " ").split()))


@pytest.mark.parametrize("url", [
    "redis://localhost:6379/0", "redis://user@h/0", "sqlite:///celeriac.sqlite3",
    "sqlite:////abs/path.db", "memory://", "disabled://", "redis://h:6379/0?db=1&x=a@b",
    "redis+socket:///tmp/r.sock?virtual_host=2", "",
])
def test_urls_without_credentials_are_unchanged(url: str) -> None:
    assert mask_password(url) == url


def test_mask_password_leaves_non_strings_alone() -> None:
    assert mask_password(None) is None


def test_mask_options_masks_passwords_at_any_depth() -> None:
    options = {"password": "p1", "sentinel_kwargs": {"password": "p2", "socket_timeout": 1},
               "master_name": "mymaster", "ssl_keyfile_password": None,
               "fallback": ["redis://:p3@h/0"]}
    assert mask_options(options) == {
        "password": "**", "sentinel_kwargs": {"password": "**", "socket_timeout": 1},
        "master_name": "mymaster", "ssl_keyfile_password": None,
        "fallback": ["redis://:**@h/0"]}
    assert options["password"] == "p1"  # a copy


def test_secrets_of_urls_options_and_settings() -> None:
    found = secrets_of(
        "redis://:url-pass@h/0?password=query-pass",
        "rediss://:p%40ss@h/0",
        {"broker_transport_options": {"password": "opt-pass",
                                      "sentinel_kwargs": {"password": "sentinel-pass"}},
         "redis_password": "setting-pass", "task_default_queue": "celery",
         "result_backend": "redis://u:backend-pass@h/1"},
    )
    assert {"url-pass", "query-pass", "p%40ss", "p@ss", "opt-pass", "sentinel-pass",
            "setting-pass", "backend-pass"} <= found
    assert "celery" not in found and "h" not in found


def test_redact_replaces_secrets_in_free_text() -> None:
    text = "AUTH failed for hunter22 (sent 'hunter22') on redis://:hunter22@h/0"
    assert redact(text, {"hunter22"}) == "AUTH failed for ** (sent '**') on redis://:**@h/0"
    # the longest first, so a secret holding another one leaves no part behind
    assert redact("abcd-efgh", {"abcd", "abcd-efgh"}) == "**"
    # one to three characters would scrub ordinary words: not replaced
    assert redact("a pass", {"a"}) == "a pass"


def test_redacting_formatter_scrubs_messages_and_tracebacks() -> None:
    from celeriac.worker.main import redact_logs

    logger = logging.getLogger("test-redact")
    logger.propagate = False
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger.handlers[:] = [Keep()]
    redact_logs({"hunter22"}, logger)
    try:
        raise ConnectionError("cannot AUTH hunter22")
    except ConnectionError:
        logger.exception("url redis://:hunter22@h/0")
    logger.handlers.clear()
    assert records and "hunter22" not in records[0]
    assert "url redis://:**@h/0" in records[0] and "ConnectionError: cannot AUTH **" in records[0]
