"""ssl.principal.mapping.rules as Kafka's SslPrincipalMapper applies them (its own test cases)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from security.tls import PrincipalMapper, TlsError, subject_dn


def test_default_is_the_whole_dn():
    assert PrincipalMapper("DEFAULT").principal_name("CN=writeuser,OU=qa,O=Sediment,C=US") == \
        "CN=writeuser,OU=qa,O=Sediment,C=US"


@pytest.mark.parametrize("rules, dn, expected", [
    ("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,DEFAULT", "CN=kafka1,OU=ServiceUsers,O=Org,C=US", "kafka1"),
    ("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,DEFAULT", "CN=duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US",
     "CN=duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"),
    ("RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,DEFAULT",
     "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", "duke@sme"),
    ("RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/U,DEFAULT",
     "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", "DUKE@SME"),
    ("RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,DEFAULT", "cn=Test User,ou=x", "test"),
    ("RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/,DEFAULT", "CN=kafka,OU=x", "kafka"),
    ("RULE:^CN=(.*?),OU=(.*?)$/$1\\/$2/,DEFAULT", "CN=a,OU=b", "a/b"),
    ("RULE:^CN=(.*?),OU=qa.*$/$1/L, RULE:^CN=(.*)$/x-$1/", "CN=WriteUser,OU=qa,O=Sediment,C=US", "writeuser"),
])
def test_rules(rules, dn, expected):
    assert PrincipalMapper(rules).principal_name(dn) == expected


def test_first_match_wins_and_no_match_fails():
    m = PrincipalMapper("RULE:^CN=(.*?),OU=qa,.*$/$1/,RULE:^CN=(.*?),.*$/other-$1/")
    assert m.principal_name("CN=a,OU=qa,O=x") == "a"
    assert m.principal_name("CN=b,OU=dev,O=x") == "other-b"
    with pytest.raises(ValueError):
        m.principal_name("OU=nobody")


@pytest.mark.parametrize("rules", ["DEFAULT,RULE:^CN=(.*)$/$1", "RULE:^CN=(.*)$/$1/X", "NOT_A_RULE", "RULE:([/$1/"])
def test_invalid_rules_name_the_key(rules):
    with pytest.raises(TlsError) as e:
        PrincipalMapper(rules)
    assert e.value.key == "ssl.principal.mapping.rules"


def _cert(name: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_certificate_subject_in_rfc2253_order_and_anonymous_without_certificate():
    der = _cert(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sediment"),
                           x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "qa"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "writeuser")]))
    assert subject_dn(der) == "CN=writeuser,OU=qa,O=Sediment,C=US"
    assert PrincipalMapper("DEFAULT").principal_of(der) == "User:CN=writeuser,OU=qa,O=Sediment,C=US"
    assert PrincipalMapper("RULE:^CN=(.*?),.*$/$1/").principal_of(der) == "User:writeuser"
    assert PrincipalMapper("DEFAULT").principal_of(None) == "User:ANONYMOUS"
