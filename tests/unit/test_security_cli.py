"""Security settings that cannot work stop start-up naming the key; `sediment users` manages SCRAM users."""

from __future__ import annotations

import io
import sys

import pytest

from service.cli import main


@pytest.mark.parametrize("args, key", [
    (["--listeners", "SSL://127.0.0.1:0"], "ssl.certfile"),
    (["--listeners", "SASL_SSL://127.0.0.1:0", "--set", "ssl.certfile=/x.pem"], "ssl.keyfile"),
    (["--listeners", "SSL://127.0.0.1:0", "--set", "ssl.certfile=/no/such.pem", "--set", "ssl.keyfile=/no/k.pem"],
     "ssl.certfile"),
    (["--set", "ssl.client.auth=always"], "ssl.client.auth"),
    (["--set", "ssl.client.auth=required"], "ssl.cafile"),
    (["--set", "sasl.enabled.mechanisms=PLAIN,GSSAPI"], "sasl.enabled.mechanisms"),
    (["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "--set", "sasl.enabled.mechanisms=OAUTHBEARER"],
     "sasl.oauthbearer.jwks.file"),
    (["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "--set", "sasl.enabled.mechanisms=OAUTHBEARER",
      "--set", "sasl.oauthbearer.jwks.file=/no/jwks.json"], "sasl.oauthbearer.jwks.file"),
    (["--set", "ssl.principal.mapping.rules=RULE:x"],
     "ssl.principal.mapping.rules"),
    (["--set", "connections.max.reauth.ms=-1"], "connections.max.reauth.ms"),
    (["--set", "http.authentication.methods=BASIC,KERBEROS"], "http.authentication.methods"),
    (["--set", "http.authentication.methods=BEARER"], "sasl.oauthbearer.jwks.file"),
    (["--set", "http.ssl.enable=true"], "ssl.certfile"),
])
def test_bad_security_config_exits_2_naming_the_key(tmp_path, capsys, args, key):
    assert main(["serve", "--data-dir", str(tmp_path), *args]) == 2
    assert f"'{key}'" in capsys.readouterr().err


def test_users_add_list_delete(tmp_path, capsys, monkeypatch):
    data = str(tmp_path / "data")
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-pw\n"))
    assert main(["users", "add", "alice", "--mechanism", "SCRAM-SHA-512", "--password-stdin", "--data-dir", data,
                 "--iterations", "8192"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("other\n"))
    assert main(["users", "add", "alice", "--mechanism", "SCRAM-SHA-256", "--password-stdin", "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--data-dir", data]) == 0
    assert capsys.readouterr().out.splitlines() == ["alice\tSCRAM-SHA-256\titerations=4096",
                                                    "alice\tSCRAM-SHA-512\titerations=8192"]
    db = (tmp_path / "data" / "metadata.db").read_bytes()
    assert b"s3cret-pw" not in db and b"other" not in db  # only salted forms are stored
    assert main(["users", "delete", "alice", "--mechanism", "SCRAM-SHA-256", "--data-dir", data]) == 0
    assert main(["users", "delete", "alice", "--mechanism", "SCRAM-SHA-256", "--data-dir", data]) == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert main(["users", "add", "bob", "--password-stdin", "--data-dir", data, "--iterations", "100"]) == 1
    capsys.readouterr()
    assert main(["users", "list", "--data-dir", data]) == 0
    assert capsys.readouterr().out.splitlines() == ["alice\tSCRAM-SHA-512\titerations=8192"]
