"""How the API key reaches the black box: a fixed header or query parameter, or a signature.

`key_auth` builds what an API profile's `auth` section asks for (recmimic's own contract:
`Authorization: Bearer`). Fixed credentials are sent with every request by the HTTP client
itself; signatures are made per request, just before it is sent, because they cover the
request and a timestamp:

- `HmacQuerySigner`: an HMAC of the request's path and query (with a timestamp parameter),
  added as a last query parameter, the scheme of Recombee's signed URLs. The standard
  library's `hmac` is the whole of it.
- `SigV4Signer`: AWS Signature Version 4, by botocore's own signer (the `aws` extra), not
  ours: the canonical request has enough corners (header folding, URI encoding, the payload
  hash) that a signer of our own would be a liability.

The key never leaves this module but in the header or parameter the profile names; reprs
hide it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from extractor.profiles import AuthSpec


class AuthError(ValueError):
    """An API key that cannot be used as the profile says; one line, without the key."""


@dataclass(frozen=True)
class Signed:
    """What a signature adds to one request."""

    headers: dict[str, str] | None
    params: dict[str, Any] | None


class Signer(Protocol):
    def sign(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Signed:
        """The headers and the (whole) query of `method path?params` with `body`, signed."""
        ...


@dataclass(frozen=True)
class KeyAuth:
    """Fixed headers and query parameters sent with every request, and a signer if any."""

    headers: dict[str, str] = field(default_factory=dict, repr=False)
    params: dict[str, str] = field(default_factory=dict, repr=False)
    signer: Signer | None = None


def key_auth(spec: AuthSpec | None, key: str, base_url: str) -> KeyAuth:
    """The credentials `spec` describes for `key` (None: recmimic's bearer token)."""
    if spec is None or spec.kind == "bearer":
        return KeyAuth(headers={"Authorization": f"Bearer {key}"})
    if spec.kind == "header":
        return KeyAuth(headers={str(spec.name): key})
    if spec.kind == "query":
        return KeyAuth(params={str(spec.name): key})
    if spec.kind == "basic":
        token = base64.b64encode(key.encode()).decode()
        return KeyAuth(headers={"Authorization": f"Basic {token}"})
    if spec.kind == "hmac":
        return KeyAuth(signer=HmacQuerySigner(key, spec, urlsplit(base_url).path.rstrip("/")))
    if spec.kind == "sigv4":
        return KeyAuth(signer=SigV4Signer(key, spec, base_url))
    return KeyAuth()


class HmacQuerySigner:
    """`?...&<timestamp_param>=<unix s>&<signature_param>=<hex HMAC of the path and query>`."""

    def __init__(self, secret: str, spec: AuthSpec, base_path: str) -> None:
        self._secret = secret.encode()
        self._digest = getattr(hashlib, spec.hmac_algorithm)
        self._timestamp = spec.timestamp_param
        self._signature = spec.signature_param
        self._base_path = base_path

    def __repr__(self) -> str:
        return "HmacQuerySigner(<secret>)"

    def sign(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Signed:
        query = {**(params or {}), self._timestamp: str(int(time.time()))}
        message = f"{self._base_path}{path}?{urlencode(query)}".encode()
        query[self._signature] = hmac.new(self._secret, message, self._digest).hexdigest()
        return Signed(None, query)


class SigV4Signer:
    """AWS Signature Version 4 over the method, URL, host, content type and body."""

    def __init__(self, key: str, spec: AuthSpec, base_url: str) -> None:
        access_key, _, secret = key.partition(":")
        if not (access_key and secret):
            raise AuthError("auth kind 'sigv4' needs the key as ACCESS_KEY_ID:SECRET_ACCESS_KEY")
        try:
            from botocore.auth import SigV4Auth
            from botocore.credentials import Credentials
        except ImportError:
            raise AuthError(
                "auth kind 'sigv4' needs botocore: pip install 'recmimic[aws]'"
            ) from None
        self._auth = SigV4Auth(Credentials(access_key, secret), spec.service, spec.region)
        parts = urlsplit(base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc.rpartition("@")[2]  # the host header the client sends
        self._base_path = parts.path.rstrip("/")

    def __repr__(self) -> str:
        return "SigV4Signer(<secret>)"

    def sign(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Signed:
        from botocore.awsrequest import AWSRequest

        url = self._origin + self._base_path + path + (f"?{urlencode(params)}" if params else "")
        headers = {"host": self._host}
        if body is not None:
            headers["content-type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        self._auth.add_auth(request)
        signed = {name: request.headers[name] for name in ("Authorization", "X-Amz-Date")}
        return Signed(signed, params)
