"""The credentials other APIs take, checked the way those APIs check them, one verifier per wire.

A client written for Recombee, Algolia or Amazon Personalize proves its key in that API's own
way, so a teacher that speaks their wire refuses anything else (a bearer key included) on
every route. Each verifier returns the configured key it proved, which then meters quota and
rate like a bearer key. Refusals carry the API's own status (Recombee 401, the others 403) and
never a secret: not the configured key, not the signature the server expected.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from fastapi import Request

from teacher_mock.errors import AuthRefused
from teacher_mock.routing import KeyVerifier, read_body
from teacher_mock.settings import TeacherSettings
from teacher_mock.signing import (
    RECOMBEE_SIGN,
    RECOMBEE_TIMESTAMP,
    SIGV4_ALGORITHM,
    SIGV4_REGION,
    SIGV4_SERVICE,
    SIGV4_TIME_FORMAT,
    botocore_modules,
    recombee_signature,
    sigv4_signature,
)

RECOMBEE_MAX_SKEW_S = 60
SIGV4_MAX_SKEW_S = 300
ALGOLIA_APP_ID = "RECMIMIC"
ALGOLIA_REFUSAL = "Invalid Application-ID or API key"


def verifier_for(settings: TeacherSettings) -> KeyVerifier | None:
    """The wire's own key check, or None for a bearer key; raises ValueError for keys or an
    environment the wire cannot use, so a bad setup fails when the app is created."""
    keys = settings.key_values()
    if settings.wire == "recombee":
        return RecombeeSignature(keys)
    if settings.wire == "algolia":
        return AlgoliaKeys(keys)
    if settings.wire == "personalize":
        return SigV4Signature(keys, settings.max_body_bytes)
    return None


def _match(candidate: bytes, keys: Sequence[bytes]) -> int | None:
    """Index of the key equal to `candidate`, every key compared in constant time."""
    found = None
    for i, key in enumerate(keys):
        if hmac.compare_digest(candidate, key):
            found = i
    return found


class RecombeeSignature:
    """Recombee's signed URLs: `hmac_timestamp` (unix seconds) and, last, `hmac_sign`, the hex
    HMAC-SHA1 of the request target as sent (raw path, "?", raw query up to `&hmac_sign=`)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = list(keys)

    async def __call__(self, request: Request) -> str:
        query: bytes = request.scope.get("query_string", b"")
        signed, found, sign = query.rpartition(f"&{RECOMBEE_SIGN}=".encode())
        if not found:
            raise _unsigned(
                f"unsigned request: end the query with {RECOMBEE_TIMESTAMP}=<unix seconds>"
                f"&{RECOMBEE_SIGN}=<hex HMAC-SHA1>"
            )
        if b"&" in sign:
            raise _unsigned(f"{RECOMBEE_SIGN} must be the last query parameter")
        _check_timestamp(signed)
        path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        target = path + b"?" + signed
        for key in self._keys:
            if hmac.compare_digest(recombee_signature(target, key).encode(), sign):
                return key
        raise _unsigned(f"{RECOMBEE_SIGN} does not match the request for any key")


def _check_timestamp(signed_query: bytes) -> None:
    """One integer `hmac_timestamp`, within a minute of the server's clock."""
    params = parse_qsl(signed_query.decode("latin-1"), keep_blank_values=True)
    stamps = [value for name, value in params if name == RECOMBEE_TIMESTAMP]
    if len(stamps) != 1 or not re.fullmatch(r"-?\d{1,12}", stamps[0]):
        raise _unsigned(f"need one {RECOMBEE_TIMESTAMP} query parameter, in unix seconds")
    if abs(time.time() - int(stamps[0])) > RECOMBEE_MAX_SKEW_S:
        raise _unsigned(
            f"{RECOMBEE_TIMESTAMP} is more than {RECOMBEE_MAX_SKEW_S} s from the server's clock"
        )


def _unsigned(message: str) -> AuthRefused:
    return AuthRefused(message, 401)


class AlgoliaKeys:
    """Algolia's two headers: the application id and an API key; one refusal for either."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = list(keys)
        self._encoded = [key.encode() for key in keys]

    async def __call__(self, request: Request) -> str:
        app_id = request.headers.get("x-algolia-application-id", "")
        found = _match(request.headers.get("x-algolia-api-key", "").encode(), self._encoded)
        if found is None or app_id != ALGOLIA_APP_ID:
            raise AuthRefused(ALGOLIA_REFUSAL, 403)
        return self._keys[found]


_AUTHORIZATION = re.compile(
    rf"{SIGV4_ALGORITHM} Credential=(?P<access>[^/\s,]+)/(?P<date>\d{{8}})/(?P<region>[^/\s,]+)/"
    r"(?P<service>[^/\s,]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9\-;]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


class SigV4Signature:
    """AWS Signature Version 4 for service `personalize` in `us-east-1`, recomputed by botocore
    from what the request carries (method, URL as sent, the signed headers, the body) at the
    time its `X-Amz-Date` says. API keys are `ACCESS_KEY_ID:SECRET_ACCESS_KEY`."""

    def __init__(self, keys: Sequence[str], body_limit: int) -> None:
        botocore_modules()  # missing botocore fails here, when the app is created
        self._body_limit = body_limit
        self._secrets: dict[str, tuple[str, str]] = {}
        for key in keys:
            access, colon, secret = key.partition(":")
            if not (colon and access and secret):
                raise ValueError(
                    "wire 'personalize' needs API keys of the form "
                    "ACCESS_KEY_ID:SECRET_ACCESS_KEY; one key has no colon"
                )
            self._secrets[access] = (secret, key)

    async def __call__(self, request: Request) -> str:
        fields = _AUTHORIZATION.fullmatch(request.headers.get("authorization", "").strip())
        if fields is None:
            raise _forbidden(
                f"missing or malformed Authorization header: expected '{SIGV4_ALGORITHM} "
                "Credential=<key id>/<date>/<region>/<service>/aws4_request, "
                "SignedHeaders=<names>, Signature=<hex>'"
            )
        amz_date = _check_date(request.headers.get("x-amz-date", ""))
        if (fields["date"], fields["region"], fields["service"]) != (
            amz_date[:8],
            SIGV4_REGION,
            SIGV4_SERVICE,
        ):
            raise _forbidden(
                f"credential scope must be <date of X-Amz-Date>/{SIGV4_REGION}/{SIGV4_SERVICE}"
                "/aws4_request"
            )
        signed = fields["signed"].split(";")
        if not {"host", "x-amz-date"} <= set(signed):
            raise _forbidden("SignedHeaders must include host and x-amz-date")
        absent = [name for name in signed if name not in request.headers]
        if absent:
            raise _forbidden(f"signed header {absent[0]!r} is not in the request")
        entry = self._secrets.get(fields["access"])
        if entry is None:
            raise _forbidden("the access key id is not known to this server")
        secret, key = entry
        body = await read_body(request, self._body_limit)
        headers = {name: request.headers[name] for name in signed}
        try:
            url = _url_as_sent(request)
            expected = sigv4_signature(
                request.method, url, headers, body, fields["access"], secret, amz_date
            )
        except ValueError:  # e.g. a Host header that is no host
            raise _forbidden("the request cannot be signed as sent") from None
        if not hmac.compare_digest(expected, fields["signature"]):
            raise _forbidden("the request signature does not match the one computed for it")
        return key


def _check_date(amz_date: str) -> str:
    """A well-formed `X-Amz-Date` within five minutes of the server's clock."""
    try:
        if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
            raise ValueError(amz_date)
        sent = datetime.strptime(amz_date, SIGV4_TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise _forbidden("missing or malformed X-Amz-Date header (YYYYMMDDTHHMMSSZ)") from None
    if abs(time.time() - sent.timestamp()) > SIGV4_MAX_SKEW_S:
        raise _forbidden("X-Amz-Date is more than 5 minutes from the server's clock")
    return amz_date


def _url_as_sent(request: Request) -> str:
    """`http://<Host><raw path>[?<raw query>]`: the bytes the client signed, not a decoded copy."""
    path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    url = f"http://{request.headers.get('host', '')}{path.decode('latin-1')}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def _forbidden(message: str) -> AuthRefused:
    return AuthRefused(message, 403)
