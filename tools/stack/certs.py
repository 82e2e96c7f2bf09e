"""Throw-away TLS material for `rankserve up --tls`: a CA, one certificate per process, a client
certificate and a bearer token for the caller.

Everything is written into one directory (the stack's run directory) and lives as long as the
certificates are valid (``days``); keys are ECDSA P-256 (fast to make, accepted by gRPC and
Envoy) and written owner-read-only. Every process certificate names ``localhost`` and
``127.0.0.1`` and serves both as a server and as a client certificate (the ranker presents its
own to Envoy, Envoy its own to the model servers and the trace receiver).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost", "127.0.0.1")
#: The caller's certificate name (its identity at the ranker) and its token's name.
CALLER = "rankserve-caller"


@dataclass(frozen=True)
class KeyPair:
    """A certificate (PEM, with the issuing chain) and its private key (PEM, PKCS#8)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalPki:
    """What `up --tls` makes: the CA, each process's pair, the caller's pair and token."""

    directory: Path
    ca: Path
    processes: dict[str, KeyPair]
    caller: KeyPair
    token: str
    token_file: Path
    tokens_file: Path

    def pair(self, name: str) -> KeyPair:
        return self.processes[name]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rankserve local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False)


class CertificateAuthority:
    """A self-signed CA that issues leaf certificates."""

    def __init__(self, common_name: str = "rankserve local CA", days: int = 30) -> None:
        self.days = days
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            # An hour back: a clock a little behind on the same machine still accepts it.
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))

    def issue(self, common_name: str, hosts: Iterable[str] = (), *, server: bool = True,
              client: bool = True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate for ``common_name`` with ``hosts`` (DNS names or IPs) as SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False))
        names = _sans(hosts)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def write_pair(self, directory: Path, name: str, cert: x509.Certificate,
                   key: ec.EllipticCurvePrivateKey) -> KeyPair:
        """``name.pem`` (the leaf; the CA is the root) and ``name.key`` (mode 0600) in
        ``directory``."""
        pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(pair.key, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return pair


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_local_pki(directory: Path, processes: Iterable[str], days: int = 30) -> LocalPki:
    """A new CA in ``directory`` and a pair for each process (server and client use, SANs
    localhost and 127.0.0.1), a client pair and a random bearer token for the caller, and the
    ranker's tokens file naming that token's hash."""
    from rankserve.server.ranking.auth import token_hash

    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(days=days)
    ca_path = ca.write_ca(directory / "ca.pem")
    pairs = {name: ca.write_pair(directory, name, *ca.issue(f"rankserve-{name}", LOCAL_NAMES))
             for name in processes}
    caller = ca.write_pair(directory, "caller", *ca.issue(CALLER, server=False))
    token = secrets.token_urlsafe(32)
    token_file = directory / "caller.token"
    _write_private(token_file, (token + "\n").encode())
    tokens_file = directory / "tokens.txt"
    tokens_file.write_text("# callers of the local ranker: NAME SHA256-of-token\n"
                           f"{CALLER} sha256:{token_hash(token)}\n")
    return LocalPki(directory, ca_path, pairs, caller, token, token_file, tokens_file)
