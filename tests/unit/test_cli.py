"""The CLI refuses bad configuration before starting anything, naming the key."""

import subprocess
import sys

import pytest

from service.cli import main


@pytest.mark.parametrize("args, key", [
    (["--set", "no.such.key=1"], "no.such.key"),
    (["--set", "num.partitions=-3"], "num.partitions"),
    (["--listeners", "PLAINTEXT://127.0.0.1:notaport"], "listeners"),
    (["--http", "nohostport"], "http.listener"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, args, key):
    assert main(["serve", "--data-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err
    assert not (tmp_path / "metadata.db").exists()  # nothing started


def test_version():
    out = subprocess.run([sys.executable, "-m", "service.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("sediment ")


def test_unwritable_audit_log_stops_start_up_naming_the_key(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "audit.log"  # a path below a regular file cannot be created
    assert main(["serve", "--data-dir", str(tmp_path / "data"), "--listeners", "PLAINTEXT://127.0.0.1:0",
                 "--http", "127.0.0.1:0", "--set", f"audit.log.file={bad}"]) == 2
    assert "'audit.log.file'" in capsys.readouterr().err
