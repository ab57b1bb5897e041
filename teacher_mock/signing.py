"""Request signatures of the foreign wires, one function per side, so both compute the same bytes.

The server (`teacher_mock.foreign_auth`) checks what a client signed by signing it again; the
tests and any hand-written client sign with the functions here. Recombee signs its request
target with HMAC-SHA1; Amazon Personalize uses AWS Signature Version 4, computed by botocore's
own signer (an optional dependency, the `aws` extra), never by a copy of it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

RECOMBEE_SIGN = "hmac_sign"
RECOMBEE_TIMESTAMP = "hmac_timestamp"
SIGV4_SERVICE, SIGV4_REGION = "personalize", "us-east-1"
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_TIME_FORMAT = "%Y%m%dT%H%M%SZ"  # X-Amz-Date, as botocore writes it


def recombee_signature(target: bytes, key: str) -> str:
    """Lowercase hex HMAC-SHA1 of the request target (path + "?" + query, without hmac_sign)."""
    return hmac.new(key.encode(), target, hashlib.sha1).hexdigest()


def sign_recombee(target: str, key: str, timestamp: int | None = None) -> str:
    """`target` (a path, with or without a query) with hmac_timestamp and hmac_sign appended."""
    stamp = int(time.time()) if timestamp is None else timestamp
    stamped = f"{target}{'&' if '?' in target else '?'}{RECOMBEE_TIMESTAMP}={stamp}"
    return f"{stamped}&{RECOMBEE_SIGN}={recombee_signature(stamped.encode(), key)}"


class BotocoreMissing(ValueError):
    """The `personalize` wire was asked for without botocore installed."""


def botocore_modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    """botocore's auth, awsrequest and credentials modules, imported on first use only."""
    try:
        from botocore import auth, awsrequest, credentials
    except ImportError:
        raise BotocoreMissing(
            "the 'personalize' wire checks AWS Signature Version 4 with botocore, which is not "
            "installed: pip install 'recmimic[aws]'"
        ) from None
    return auth, awsrequest, credentials


def sigv4_signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    amz_date: str,
) -> str:
    """The SigV4 signature of a request as signed at `amz_date` (botocore's own computation).

    botocore's `add_auth` stamps the current time; the lower-level steps used here take the time
    the request carries, so a server can recompute what the client signed seconds earlier.
    """
    auth, awsrequest, credentials = botocore_modules()
    request = awsrequest.AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    request.context["timestamp"] = amz_date
    signer = auth.SigV4Auth(
        credentials.Credentials(access_key, secret_key), SIGV4_SERVICE, SIGV4_REGION
    )
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


def sign_sigv4(
    method: str,
    url: str,
    body: bytes,
    access_key: str,
    secret_key: str,
    amz_date: str | None = None,
) -> dict[str, str]:
    """Headers that sign a JSON request for the `personalize` wire (host, content type, date).

    Without `amz_date` this is exactly what a botocore client does (`SigV4Auth.add_auth`, which
    adds X-Amz-Date as now); with one, the request is signed as if sent then (stale-date tests).
    """
    auth, awsrequest, credentials = botocore_modules()
    headers = {"host": urlsplit(url).netloc, "content-type": "application/json"}
    if amz_date is None:
        request: Any = awsrequest.AWSRequest(method=method, url=url, headers=headers, data=body)
        auth.SigV4Auth(
            credentials.Credentials(access_key, secret_key), SIGV4_SERVICE, SIGV4_REGION
        ).add_auth(request)
        return dict(request.headers.items())
    headers["x-amz-date"] = amz_date
    signature = sigv4_signature(method, url, headers, body, access_key, secret_key, amz_date)
    scope = f"{access_key}/{amz_date[:8]}/{SIGV4_REGION}/{SIGV4_SERVICE}/aws4_request"
    authorization = (
        f"{SIGV4_ALGORITHM} Credential={scope}, "
        f"SignedHeaders={';'.join(sorted(headers))}, Signature={signature}"
    )
    return {**headers, "Authorization": authorization}
