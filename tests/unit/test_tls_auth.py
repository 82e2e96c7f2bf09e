"""TLS material and caller authentication without servers: the throw-away PKI of `up --tls`,
TLS files with errors that name their flag, the tokens file, and the ranker's auth rule."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rankserve.server.common.tls import TlsFileError, TlsFiles, bearer
from rankserve.server.ranking.auth import (
    INVALID_TOKEN,
    MALFORMED,
    MISSING,
    NOT_ALLOWED,
    CallerAuth,
    TokenFile,
    TokenFileError,
    parse_tokens,
    token_hash,
)
from rankserve.tools.stack.certs import CALLER, make_local_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_local_pki(tmp_path_factory.mktemp("pki"), ["ranker", "envoy"], days=2)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_local_pki_issues_server_and_client_certificates_of_one_ca(pki) -> None:
    ca = _load(pki.ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("ranker", "envoy"):
        cert = _load(pki.pair(name).cert)
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert stat.S_IMODE(os.stat(pki.pair(name).key).st_mode) == 0o600
    caller = _load(pki.caller.cert)
    caller.verify_directly_issued_by(ca)
    assert caller.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CALLER
    assert set(caller.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.CLIENT_AUTH}
    # Credentials build from the files: gRPC accepts the PEM as it is.
    TlsFiles(str(pki.pair("ranker").cert), str(pki.pair("ranker").key),
             str(pki.ca)).server_credentials()
    assert pki.token_file.read_text().strip() == pki.token
    tokens = TokenFile(pki.tokens_file)
    assert tokens.caller(pki.token) == CALLER and tokens.caller("guess") is None


def test_tls_files_name_the_flag_and_file_that_is_wrong(tmp_path, pki) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TlsFileError, match=rf"--tls-key {missing}: cannot read the private key"):
        TlsFiles(str(pki.pair("ranker").cert), str(missing)).server_credentials()
    text = tmp_path / "text.pem"
    text.write_text("hello")
    with pytest.raises(TlsFileError, match=rf"--model-tls-ca {text}: not a PEM file"):
        TlsFiles(ca=str(text), flags=("--model-tls-cert", "--model-tls-key",
                                       "--model-tls-ca")).channel_credentials()
    with pytest.raises(TlsFileError, match="--tls-cert is set but --tls-key is not"):
        TlsFiles(cert=str(pki.pair("ranker").cert)).check()
    with pytest.raises(TlsFileError, match="--tls-cert and --tls-key are needed"):
        TlsFiles(ca=str(pki.ca)).server_credentials()
    assert not TlsFiles().enabled and TlsFiles(always=True).enabled
    assert TlsFiles(server_name="ranker.internal").channel_options() == [
        ("grpc.ssl_target_name_override", "ranker.internal")]
    assert bearer("") == () and bearer("t") == (("authorization", "Bearer t"),)


def test_tokens_file_stores_hashes_and_names_bad_lines(tmp_path) -> None:
    good = parse_tokens(f"# comment\nfrontend sha256:{token_hash('s3cret')}\n\n"
                        f"frontend {token_hash('next')}  # rotation\n", "f")
    assert [name for name, _ in good] == ["frontend", "frontend"]
    with pytest.raises(TokenFileError, match="f:2: expected 'NAME SHA256'"):
        parse_tokens("a " + token_hash("x") + "\nb s3cret\n", "f")
    with pytest.raises(TokenFileError, match="listed for 'a' and 'b'"):
        parse_tokens(f"a {token_hash('x')}\nb {token_hash('x')}\n", "f")
    with pytest.raises(TokenFileError, match="--auth-tokens-file .*cannot read it"):
        TokenFile(tmp_path / "absent.txt")


def test_tokens_file_is_reread_when_it_changes_and_a_broken_edit_keeps_the_old(tmp_path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"a {token_hash('one')}\n")
    tokens = TokenFile(path, check_s=0)
    assert tokens.caller("one") == "a"
    path.write_text(f"b {token_hash('two')}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert tokens.caller("two") == "b" and tokens.caller("one") is None
    path.write_text("broken line\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert tokens.caller("two") == "b"


def _tls(cn: str | None = None, sans: tuple[str, ...] = ()) -> dict:
    ctx: dict = {"transport_security_type": [b"ssl"]}
    if cn:
        ctx["x509_common_name"] = [cn.encode()]
    if sans:
        ctx["x509_subject_alternative_name"] = [s.encode() for s in sans]
    return ctx


def test_auth_rule_statuses(tmp_path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"frontend {token_hash('good')}\nbatch {token_hash('other')}\n")
    auth = CallerAuth(certificates=True, tokens=TokenFile(path),
                      allowed=["frontend", "rankserve-caller"])
    unauth = grpc.StatusCode.UNAUTHENTICATED

    d = auth.decide(_tls(), [])
    assert (d.code, d.reason) == (unauth, MISSING)
    assert "client certificate" in d.message and "Bearer" in d.message
    d = auth.decide(_tls(), [("authorization", "Basic abc")])
    assert (d.code, d.reason) == (unauth, MALFORMED)
    d = auth.decide(_tls(), [("authorization", "Bearer wrong")])
    assert (d.code, d.reason) == (unauth, INVALID_TOKEN)
    assert "wrong" not in d.message
    assert auth.decide(_tls(), [("authorization", "bearer good")]) == auth.decide(
        {}, [("authorization", "Bearer good")])
    assert auth.decide(_tls(), [("authorization", "Bearer good")]).caller == "frontend"
    d = auth.decide(_tls(), [("authorization", "Bearer other")])
    assert (d.code, d.reason, d.caller) == (grpc.StatusCode.PERMISSION_DENIED, NOT_ALLOWED,
                                            "batch")
    # A verified certificate is an identity of its own: its common name or any SAN.
    assert auth.decide(_tls("rankserve-caller"), []).code is None
    assert auth.decide(_tls("x", ("frontend",)), []).code is None
    d = auth.decide(_tls("intruder"), [])
    assert (d.code, d.caller) == (grpc.StatusCode.PERMISSION_DENIED, "intruder")
    # Names without TLS are not an identity.
    assert auth.decide({"x509_common_name": [b"frontend"]}, []).reason == MISSING

    tokens_only = CallerAuth(certificates=False, tokens=TokenFile(path))
    assert tokens_only.decide(_tls("frontend"), []).reason == MISSING
    assert "certificate" not in tokens_only.decide({}, []).message
    assert tokens_only.decide({}, [("authorization", "Bearer other")]).caller == "batch"
    assert not CallerAuth(certificates=False, tokens=None).enabled
