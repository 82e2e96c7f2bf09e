"""TLS material from PEM files, turned into gRPC server or channel credentials.

One frozen dataclass per side of a hop: its own certificate chain and key, and the CA that
verifies the peer. Files are read when credentials are built (at start-up), so a missing or
unreadable file stops the process with a message naming the flag and the file, never a
handshake error later.

gRPC's Python server either does not ask for a client certificate or requires one that its CA
verifies (``grpc.ssl_server_credentials(require_client_auth=...)``); it cannot ask for an
optional one. A server with a client CA therefore runs mutual TLS: a caller without a valid
certificate is refused in the handshake, before a byte of its request is read.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

_PEM_MARK = b"-----BEGIN "


class TlsFileError(ValueError):
    """A TLS file named by a flag is missing, unreadable or not PEM."""


def read_pem(path: str | Path, flag: str, what: str) -> bytes:
    """The bytes of a PEM file; TlsFileError naming ``flag`` and the file otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{flag} {path}: cannot read the {what}: "
                           f"{exc.strerror or exc}") from None
    if _PEM_MARK not in data:
        raise TlsFileError(f"{flag} {path}: not a PEM file (no '-----BEGIN' line); give the"
                           f" {what} in PEM format")
    return data


@dataclass(frozen=True)
class TlsFiles:
    """One end of a TLS hop: ``cert`` + ``key`` (own chain and key, PEM) and ``ca`` (verifies
    the peer). ``flags`` name the three settings in error messages.

    As a server: ``cert`` and ``key`` are required; with ``ca`` every client must present a
    certificate it verifies (mutual TLS). As a client: ``ca`` verifies the server (empty: the
    system's roots); ``cert`` + ``key`` are presented when the server asks (mutual TLS);
    ``server_name`` overrides the name checked in the server's certificate.
    """

    cert: str = ""
    key: str = ""
    ca: str = ""
    server_name: str = ""
    #: TLS even when no file is given: a client then verifies the server with system roots.
    always: bool = False
    flags: tuple[str, str, str] = ("--tls-cert", "--tls-key", "--tls-ca")

    @property
    def enabled(self) -> bool:
        return bool(self.always or self.cert or self.key or self.ca)

    def _pair(self) -> tuple[bytes, bytes] | None:
        cert_flag, key_flag, _ = self.flags
        if bool(self.cert) != bool(self.key):
            given, missing = (cert_flag, key_flag) if self.cert else (key_flag, cert_flag)
            raise TlsFileError(f"{given} is set but {missing} is not: a certificate and its"
                               " private key go together")
        if not self.cert:
            return None
        return (read_pem(self.key, key_flag, "private key"),
                read_pem(self.cert, cert_flag, "certificate chain"))

    def _ca(self) -> bytes | None:
        return read_pem(self.ca, self.flags[2], "CA certificate") if self.ca else None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of a TLS port; mutual TLS (client certificate required) with ``ca``."""
        pair = self._pair()
        if pair is None:
            raise TlsFileError(f"{self.flags[0]} and {self.flags[1]} are needed to serve TLS")
        ca = self._ca()
        return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                           require_client_auth=ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a channel to a TLS server, with a client certificate when given."""
        pair = self._pair()
        key, chain = pair if pair is not None else (None, None)
        return grpc.ssl_channel_credentials(root_certificates=self._ca(), private_key=key,
                                            certificate_chain=chain)

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel options that go with the credentials (the checked server name)."""
        if not self.server_name:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]

    def check(self) -> None:
        """Reads every file given, so a bad one fails now with its flag in the message."""
        self._pair()
        self._ca()


def secure_or_insecure_channel(target: str, tls: TlsFiles | None,
                               options: list[tuple[str, object]] | None = None
                               ) -> grpc.Channel:
    """A synchronous channel to ``target``: TLS when ``tls`` is enabled, plaintext otherwise."""
    opts = list(options or [])
    if tls is not None and tls.enabled:
        return grpc.secure_channel(target, tls.channel_credentials(),
                                   options=opts + tls.channel_options())
    return grpc.insecure_channel(target, options=opts)


#: A caller's bearer token, when no --token-file is given.
TOKEN_ENV = "RANKSERVE_TOKEN"


def add_caller_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of a client of a TLS ranker (`rankserve rank`, the load test): its CA, a client
    certificate, a bearer token."""
    g = parser.add_argument_group("TLS and authentication")
    g.add_argument("--tls", action="store_true",
                   help="Call over TLS, verifying the server with the system's roots (implied"
                   " by any --tls-* file).")
    g.add_argument("--tls-ca", metavar="PATH", default="",
                   help="CA certificate (PEM) that verifies the server's certificate.")
    g.add_argument("--tls-cert", metavar="PATH", default="",
                   help="Client certificate chain (PEM) for mutual TLS; needs --tls-key.")
    g.add_argument("--tls-key", metavar="PATH", default="",
                   help="Private key (PEM) of --tls-cert.")
    g.add_argument("--tls-server-name", metavar="NAME", default="",
                   help="Name to check in the server's certificate instead of the target's"
                   " host.")
    g.add_argument("--token-file", metavar="PATH", default="",
                   help="File holding a bearer token, sent as 'authorization: Bearer TOKEN'"
                   f" (default: the token in ${TOKEN_ENV}, if set).")


def caller_from_args(args: argparse.Namespace
                     ) -> tuple[TlsFiles, tuple[tuple[str, str], ...]]:
    """(TLS of the channel, metadata of each call) from :func:`add_caller_flags`' flags; every
    file is read now, and a ValueError names the flag and file that are wrong."""
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca, args.tls_server_name,
                   always=args.tls)
    if tls.enabled:
        tls.check()
    token = os.environ.get(TOKEN_ENV, "")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise TlsFileError(f"--token-file {args.token_file}: cannot read it:"
                               f" {exc.strerror or exc}") from None
        if not token:
            raise TlsFileError(f"--token-file {args.token_file} is empty")
    return tls, bearer(token)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (none for an empty token)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
