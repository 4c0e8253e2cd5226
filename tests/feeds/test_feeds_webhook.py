"""The webhook sink against a real HTTP receiver that verifies every signature itself."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import time
from email.utils import formatdate
from pathlib import Path
from typing import Iterator

import pytest
import requests
from pydantic import ValidationError
from urllib3.exceptions import InsecureRequestWarning

from celsync.config import ConfigError, WebhookSinkConfig, config_from_dict
from celsync.sinks.base import Outcome, SinkDisabled
from celsync.sinks.webhook import WebhookSink, retry_after_seconds
from tests.feeds.feeds_support import SECRET, Planned, Receiver, delivery, make_record


def sink_for(url: str, **settings: object) -> WebhookSink:
    return WebhookSink(WebhookSinkConfig(type="webhook", url=url, secret=SECRET, **settings))


def test_every_request_is_signed_and_verified_independently(receiver: Receiver) -> None:
    records = [make_record(n) for n in range(3)]
    sink = sink_for(receiver.url)
    results = [r for rec in records for r in sink.send([delivery(rec, version=2)])]

    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    assert [r.verified for r in receiver.received] == [True] * 3
    first = receiver.received[0]
    assert first.headers["content-type"] == "application/json"
    assert first.headers["webhook-id"] == "1716900000_0/1716900000_1000#v2"
    assert first.body == json.dumps(json.loads(first.body), separators=(",", ":"), ensure_ascii=False).encode()
    assert [json.loads(r.body) for r in receiver.received] == [
        {"type": "call.record", "timestamp": rec["ended_at"], "data": rec} for rec in records
    ]


def test_a_tampered_body_or_a_stale_timestamp_is_rejected(receiver: Receiver) -> None:
    sink_for(receiver.url).send([delivery(make_record(1))])
    signed = receiver.received[0]
    replay = {k: signed.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    tampered = signed.body.replace(b'"duration":42', b'"duration":4200')
    assert tampered != signed.body

    assert requests.post(receiver.url, data=tampered, headers=replay, timeout=5).status_code == 401
    assert requests.post(receiver.url, data=signed.body, headers=replay, timeout=5).status_code == 204

    an_hour_late = WebhookSink(WebhookSinkConfig(type="webhook", url=receiver.url, secret=SECRET),
                               clock=lambda: time.time() - 3600)
    [stale] = an_hour_late.send([delivery(make_record(1))])
    assert stale.outcome is Outcome.RETRY and "401" in stale.error
    assert [r.verified for r in receiver.received] == [True, False, True, False]


def test_a_retry_carries_the_same_id_and_body_and_honours_the_answer(receiver: Receiver) -> None:
    receiver.plan.extend([Planned(503), Planned(200)])
    sink = sink_for(receiver.url)
    d = delivery(make_record(1))
    first, second = sink.send([d])[0], sink.send([d])[0]

    assert (first.outcome, second.outcome) == (Outcome.RETRY, Outcome.DELIVERED)
    assert "503" in first.error and first.retry_after is None
    a, b = receiver.received
    assert a.verified and b.verified
    assert (a.headers["webhook-id"], a.body) == (b.headers["webhook-id"], b.body)


def test_410_gone_disables_the_sink(receiver: Receiver) -> None:
    receiver.plan.append(Planned(410))
    with pytest.raises(SinkDisabled, match="410 Gone") as gone:
        sink_for(receiver.url + "/s3cr3t?token=s3cr3t").send([delivery(make_record(1))])
    assert "s3cr3t" not in str(gone.value)


@pytest.mark.parametrize(("header", "low", "high"), [("7", 7, 7), (None, 100, 121)])
def test_429_is_retried_after_what_retry_after_says(receiver: Receiver, header: str | None, low: float, high: float) -> None:
    value = header or formatdate(time.time() + 120, usegmt=True)
    receiver.plan.append(Planned(429, {"Retry-After": value}))
    [result] = sink_for(receiver.url).send([delivery(make_record(1))])
    assert result.outcome is Outcome.RETRY and "429" in result.error
    assert result.retry_after is not None and low <= result.retry_after <= high


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), (" 30 ", 30.0), ("", None), (None, None), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: go now
])
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value, time.time()) == expected


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.plan.append(Planned(302, {"Location": "https://crm.example.com/moved/s3cr3t?t=x"}))
    [result] = sink_for(receiver.url).send([delivery(make_record(1))])
    assert result.outcome is Outcome.RETRY
    assert "302" in result.error and "redirects are not followed" in result.error
    assert "https://crm.example.com/" in result.error and "s3cr3t" not in result.error
    assert [r.path for r in receiver.received] == ["/hooks/calls"]


def test_a_timeout_is_retried_with_the_same_id(receiver: Receiver) -> None:
    receiver.plan.append(Planned(200, delay=1.0))
    [result] = sink_for(receiver.url, timeout=0.2).send([delivery(make_record(1))])
    assert result.outcome is Outcome.RETRY and "Timeout" in result.error


def test_a_refused_connection_is_retried_without_the_url_query_in_the_error() -> None:
    [result] = sink_for("http://127.0.0.1:1/hook?token=s3cr3t").send([delivery(make_record(1))])
    assert result.outcome is Outcome.RETRY
    assert "Connection refused" in result.error and "s3cr3t" not in result.error


@pytest.fixture(scope="module")
def tls_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """An HTTPS receiver with a self-signed certificate, which verification must refuse."""
    d: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    r = Receiver(tls=context).start()
    yield r
    r.stop()


def test_tls_is_verified_by_default(tls_receiver: Receiver) -> None:
    assert WebhookSinkConfig(type="webhook", url=tls_receiver.url, secret=SECRET).verify_tls is True
    [refused] = sink_for(tls_receiver.url).send([delivery(make_record(1))])
    assert refused.outcome is Outcome.RETRY and "TLS verification" in refused.error
    with pytest.warns(InsecureRequestWarning):
        [accepted] = sink_for(tls_receiver.url, verify_tls=False).send([delivery(make_record(1))])
    assert accepted.outcome is Outcome.DELIVERED
    assert [r.verified for r in tls_receiver.received] == [True]


SHORT = "whsec_" + base64.b64encode(b"x" * 16).decode()


@pytest.mark.parametrize(("secret", "message"), [
    ("whsec_not*base64!", "not 'whsec_' followed by base64"),
    ("plain passphrase", "not 'whsec_' followed by base64"),
    (SHORT, "decodes to 16 bytes"),
])
def test_an_invalid_secret_is_a_config_error_that_does_not_show_it(secret: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sinks": [{"type": "webhook", "url": "https://x.example", "secret": secret}]})
    assert "sinks.0.webhook.secret" in str(err.value) and message in str(err.value)
    assert secret not in str(err.value)
    with pytest.raises(ValidationError) as direct:
        WebhookSinkConfig(type="webhook", url="https://x.example", secret=secret)
    assert secret not in str(direct.value)


def test_the_secret_stays_out_of_the_config_repr() -> None:
    cfg = WebhookSinkConfig(type="webhook", url="https://x.example", secret=SECRET)
    assert SECRET not in repr(cfg) and SECRET.removeprefix("whsec_") not in repr(cfg)


def test_an_unpadded_secret_works_as_in_the_reference_library(receiver: Receiver) -> None:
    assert SECRET.endswith("=")
    unpadded = WebhookSinkConfig(type="webhook", url=receiver.url, secret=SECRET.rstrip("="))
    [result] = WebhookSink(unpadded).send([delivery(make_record(1))])
    assert result.outcome is Outcome.DELIVERED and receiver.received[0].verified
