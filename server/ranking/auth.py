"""Who may call the ranker: a verified client certificate or a bearer token, checked before a
byte of the request is parsed.

- Auth is on when the ranker has a client CA (``--tls-client-ca``: mutual TLS, the certificate
  is verified in the handshake) or a tokens file (``--auth-tokens-file``); with neither, every
  call passes.
- A caller's identity is its certificate's names (gRPC lists them only for a certificate its CA
  verified), else the name the tokens file gives the token in ``authorization: Bearer TOKEN``.
- No identity: UNAUTHENTICATED. An identity not in ``--auth-allowed-callers`` (when that is
  set): PERMISSION_DENIED. Each refusal is counted by reason.
- ``grpc.health.v1`` stays open: load balancers, Envoy and kubelet probes ask it without
  credentials, and it tells nothing but SERVING or not. Reflection needs credentials.

The interceptor is the outermost one: a refused call is never parsed (its handler gets the raw
bytes and parses them only once admitted), never traced and never reaches the servicer.

Tokens file: one caller per line, ``NAME SHA256``, the SHA-256 of the token in hex (optionally
``sha256:``-prefixed), e.g. from ``printf %s "$TOKEN" | sha256sum``; ``#`` starts a comment; a
name may have several tokens (rotation). Only hashes are stored; a presented token's hash is
compared with every entry in constant time. The file is re-read when it changes (a Kubernetes
Secret update); a broken edit keeps the previous tokens and is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BEARER = re.compile(r"Bearer +(\S+)\s*", re.IGNORECASE)

# Refusal reasons (the metric's label values).
MISSING = "missing_credentials"
MALFORMED = "malformed_authorization"
INVALID_TOKEN = "invalid_token"
NOT_ALLOWED = "caller_not_allowed"
REASONS = (MISSING, MALFORMED, INVALID_TOKEN, NOT_ALLOWED)


class TokenFileError(ValueError):
    """The tokens file cannot be read or has a bad line."""


def token_hash(token: str) -> str:
    """What a tokens file stores for ``token``: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(text: str, origin: str) -> list[tuple[str, bytes]]:
    """``NAME SHA256`` lines -> [(name, digest)]; TokenFileError names the bad line."""
    entries: list[tuple[str, bytes]] = []
    seen: dict[bytes, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        digest = parts[1].lower().removeprefix("sha256:") if len(parts) == 2 else ""
        if not _HEX64.fullmatch(digest):
            raise TokenFileError(
                f"{origin}:{n}: expected 'NAME SHA256' (the token's SHA-256 in 64 hex digits,"
                " e.g. from `printf %s \"$TOKEN\" | sha256sum`)")
        value = bytes.fromhex(digest)
        if value in seen and seen[value] != parts[0]:
            raise TokenFileError(f"{origin}:{n}: the same token is listed for {seen[value]!r}"
                                 f" and {parts[0]!r}; give each caller its own")
        seen[value] = parts[0]
        entries.append((parts[0], value))
    return entries


class TokenFile:
    """The callers of a tokens file; re-read when its size or mtime changes, looked at most
    every ``check_s`` seconds. A file that cannot be read at start raises TokenFileError."""

    def __init__(self, path: str | Path, check_s: float = 2.0) -> None:
        self.path = Path(path)
        self._check_s = check_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._entries = self._load()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TokenFileError(f"--auth-tokens-file {self.path}: cannot read it:"
                                 f" {exc.strerror or exc}") from None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> list[tuple[str, bytes]]:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise TokenFileError(f"--auth-tokens-file {self.path}: cannot read it:"
                                 f" {exc.strerror or exc}") from None
        return parse_tokens(text, str(self.path))

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._check_s:
            return
        with self._lock:
            if now - self._checked < self._check_s:
                return
            self._checked = now
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    self._entries = self._load()
                    self._stamp = stamp
                    log.info("tokens file %s re-read: %d tokens", self.path,
                             len(self._entries))
            except TokenFileError as exc:
                log.error("keeping the previous tokens: %s", exc)

    def caller(self, token: str) -> str | None:
        """The name of the caller this token belongs to, or None."""
        self._refresh()
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for name, stored in self._entries:  # every entry, so timing tells nothing
            if hmac.compare_digest(digest, stored):
                found = name
        return found

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Decision:
    """The outcome of one call's check: ``code`` None admits ``caller``."""

    caller: str | None
    code: grpc.StatusCode | None = None
    reason: str = ""
    message: str = ""


def _certificate_names(auth_context: dict[str, Sequence[bytes]]) -> list[str]:
    """The verified client certificate's names: common name first, then its SANs."""
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return []
    names = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            name = value.decode(errors="replace")
            if name and name not in names:
                names.append(name)
    return names


class CallerAuth:
    """The rule above, free of servers: ``decide(auth_context, metadata)``."""

    def __init__(self, *, certificates: bool, tokens: TokenFile | None,
                 allowed: Iterable[str] = ()) -> None:
        self.certificates = certificates
        self.tokens = tokens
        self.allowed = frozenset(allowed)

    @property
    def enabled(self) -> bool:
        return self.certificates or self.tokens is not None

    def _how(self) -> str:
        ways = []
        if self.certificates:
            ways.append("a client certificate of the ranker's client CA")
        if self.tokens is not None:
            ways.append("'authorization: Bearer TOKEN' metadata with a token the ranker knows")
        return " or ".join(ways)

    def decide(self, auth_context: dict[str, Sequence[bytes]],
               metadata: Iterable[tuple[str, Any]]) -> Decision:
        names = _certificate_names(auth_context) if self.certificates else []
        caller = names[0] if names else None
        if caller is None and self.tokens is not None:
            header = next((v for k, v in metadata if k == "authorization"), None)
            if header is not None:
                if isinstance(header, bytes):
                    header = header.decode(errors="replace")
                match = _BEARER.fullmatch(header)
                if match is None:
                    return Decision(None, grpc.StatusCode.UNAUTHENTICATED, MALFORMED,
                                    "authorization metadata must be 'Bearer TOKEN'")
                caller = self.tokens.caller(match.group(1))
                if caller is None:
                    return Decision(None, grpc.StatusCode.UNAUTHENTICATED, INVALID_TOKEN,
                                    "the bearer token is not valid for this ranker")
                names = [caller]
        if caller is None:
            return Decision(None, grpc.StatusCode.UNAUTHENTICATED, MISSING,
                            f"no credentials: call with {self._how()}")
        if self.allowed and not self.allowed.intersection(names):
            return Decision(caller, grpc.StatusCode.PERMISSION_DENIED, NOT_ALLOWED,
                            f"caller {caller!r} is not allowed to call this ranker")
        return Decision(caller)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Outermost interceptor of the ranker: refuses calls without valid credentials before
    their request is parsed, and counts each refusal by reason."""

    def __init__(self, auth: CallerAuth, registry: CollectorRegistry) -> None:
        self._auth = auth
        self.refused = Counter(
            "rankserve_auth_refused", "Calls refused by the ranker's caller authentication,"
            " by reason (UNAUTHENTICATED, or PERMISSION_DENIED for caller_not_allowed).",
            ["reason"], registry=registry)
        for reason in REASONS:
            self.refused.labels(reason)

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        decision = self._auth.decide(context.auth_context(), context.invocation_metadata()
                                     or ())
        if decision.code is not None:
            self.refused.labels(decision.reason).inc()
            await context.abort(decision.code, decision.message)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        admit = self._admit
        inner = (handler.unary_unary or handler.unary_stream or handler.stream_unary
                 or handler.stream_stream)
        # A single request arrives as raw bytes and is parsed only once the caller is admitted;
        # a request stream is parsed lazily as the handler reads it, after the check anyway.
        parse = None if handler.request_streaming else handler.request_deserializer
        deserializer = handler.request_deserializer if handler.request_streaming else None

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await inner(parse(request) if parse else request, context)

        async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> None:
            await admit(context)
            result = inner(parse(request) if parse else request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    await context.write(item)
            else:
                await result

        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        behaviour = stream_response if handler.response_streaming else unary_response
        return factory(behaviour, deserializer, handler.response_serializer)
