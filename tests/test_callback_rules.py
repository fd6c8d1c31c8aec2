"""The rules of callbacks that are pure functions: backoff, Retry-After, addresses, signing."""

from __future__ import annotations

import email.utils
import ipaddress
from datetime import timedelta

import pytest

from pericles.model import utcnow
from pericles.outbound.guard import Allowed
from pericles.outbound.signing import signature, verify
from pericles.service.callbacks import MAX_DELAY, retry_delay


@pytest.mark.parametrize("retries", [0, 1, 2, 3, 5])
def test_backoff_doubles_with_jitter(retries: int) -> None:
    delays = [retry_delay(retries, 2.0, None) for _ in range(200)]
    expected = 2.0 * 2**retries
    assert all(0.75 * expected <= d <= 1.25 * expected for d in delays)
    assert len(set(delays)) > 1  # jittered


def test_backoff_is_capped_at_ten_minutes() -> None:
    assert all(retry_delay(n, 2.0, None) <= MAX_DELAY == 600 for n in range(8, 200))
    assert retry_delay(100, 2.0, None) == MAX_DELAY


def test_retry_after_wins_in_seconds_or_as_a_date() -> None:
    assert retry_delay(5, 2.0, "7") == 7
    when = email.utils.format_datetime(utcnow() + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_delay(0, 2.0, when) <= 31
    assert retry_delay(0, 2.0, "86400") == MAX_DELAY
    assert 1.5 <= retry_delay(0, 2.0, "soon") <= 2.5  # unreadable: the backoff


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_public_addresses_by_default(address: str, why: str | None) -> None:
    refusal = Allowed([]).refusal("h.example", ipaddress.ip_address(address))
    assert (refusal is None) if why is None else (refusal is not None and why in refusal)


def test_allow_opens_networks_and_host_names() -> None:
    allowed = Allowed(["10.0.0.0/8", "hooks.internal"])
    assert allowed.refusal("x.example", ipaddress.ip_address("10.9.9.9")) is None
    assert allowed.refusal("x.example", ipaddress.ip_address("192.168.1.1")) is not None
    assert allowed.refusal("HOOKS.internal.", ipaddress.ip_address("192.168.1.1")) is None


def test_signature_covers_timestamp_and_body() -> None:
    header = signature("key", "1764581000", b'{"a":1}')
    assert header.startswith("v1=")
    assert len(header) == 3 + 64
    assert verify("key", "1764581000", b'{"a":1}', header)
    assert not verify("key", "1764581001", b'{"a":1}', header)
    assert not verify("key", "1764581000", b'{"a":2}', header)
    assert not verify("other", "1764581000", b'{"a":1}', header)
