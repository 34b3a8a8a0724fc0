"""Errors a user can cause on the command line are one line, ``rtckit: error: ...``, with a
non-zero status and no traceback: busy ports, unwritable directories, a closed output pipe,
a configuration that needs what is not installed, unknown options (with the usage of the
sub-command they were given to); and ``--help`` reads as plain text."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtckit.cli import main

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else "")}


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_signaling_on_a_busy_port(busy_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtckit", "signaling", "--open", "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
        check=False,
    )
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert line.startswith(f"rtckit: error: cannot listen on 127.0.0.1:{busy_port}: "), line
    assert "in use" in line


def test_cert_create_into_a_directory_that_cannot_be_made(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cert", "create", "--out", "/proc/nope"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert (
        line
        == "rtckit: error: --out /proc/nope: cannot write: /proc/nope: No such file or directory"
    )


def test_cert_create_with_a_ca_directory_under_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a directory")
    ca = tmp_path / "file" / "ca"
    assert main(["cert", "create", "--out", str(tmp_path / "out"), "--ca", str(ca)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"rtckit: error: --ca {ca}: cannot write: "), line


@pytest.mark.parametrize("where", ["/proc/nope/demo", "file/demo"])
def test_demo_with_a_cert_dir_that_cannot_be_made(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    cert_dir = tmp_path / where  # an absolute `where` stays as it is
    argv = ["demo", "--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
    assert main([*argv, "--cert-dir", str(cert_dir)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"rtckit: error: --cert-dir {cert_dir}: cannot keep"), line


def test_cert_show_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    assert main(["cert", "create", "--out", str(tmp_path)]) == 0
    read, write = os.pipe()
    os.close(read)  # as `rtckit cert show F | head -1` once head has exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rtckit", "cert", "show", str(tmp_path / "cert.pem")],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            env=_env(),
            check=False,
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 141


def _serve_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\ninsecure = true\n'
        f'[auth]\nmode = "open"\n[metrics]\nenabled = true\n{extra}',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("check", [True, False])
def test_serve_refuses_metrics_without_prometheus_client_naming_the_file(
    check: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _serve_config(tmp_path)
    # an installation without the metrics extra
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "rtckit.server.metrics", raising=False)
    argv = ["serve", "--config", str(config)]
    assert main([*argv, "--check"] if check else argv) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert line.startswith(
        f"rtckit: error: {config}: [metrics] enabled needs prometheus-client: "
    ), line
    assert "listen:" not in captured.out


def test_serve_on_a_busy_port_names_the_file(
    busy_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {busy_port}\ninsecure = true\n'
        '[auth]\nmode = "open"\n[metrics]\nenabled = false\n',
        encoding="utf-8",
    )
    assert main(["serve", "--config", str(config)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"rtckit: error: {config}: cannot listen on 127.0.0.1:{busy_port}")


def test_an_unknown_option_shows_the_usage_of_its_sub_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["cert", "create", "--out", "x", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rtckit cert create "), err
    assert err.rstrip().endswith("rtckit cert create: error: unrecognized arguments: --bogus")
    with pytest.raises(SystemExit):
        main(["demo", "--bogus"])
    assert capsys.readouterr().err.startswith("usage: rtckit demo ")
    with pytest.raises(SystemExit):
        main(["--bogus", "demo"])
    assert capsys.readouterr().err.startswith("usage: rtckit [-h]")


def _help(*command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    doctor = _help("doctor", capsys=capsys)
    assert "rtckit doctor: check STUN/TURN servers" in doctor
    assert "``" not in doctor
    assert ":mod:" not in doctor
    serve = _help("serve", capsys=capsys)
    config_help = serve.split("--config FILE", 2)[2].split("--check")[0]
    assert "TOML configuration file" in " ".join(config_help.split())


def test_signaling_browser_example_help_busy_port_and_ctrl_c(busy_port: int) -> None:
    example = str(ROOT / "examples" / "signaling_browser.py")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, example, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=_env(),
            check=False,
        )

    shown = run("--help")
    assert shown.returncode == 0
    assert "--port PORT" in shown.stdout
    busy = run("--port", str(busy_port))
    assert busy.returncode == 1
    line = _one_error_line(busy.stderr)
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{busy_port}: "), line
    assert "--port" in line

    with socket.socket() as probe:  # a free port for the real start
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, example, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        assert f"open http://127.0.0.1:{port}/" in process.stdout.readline()
        process.send_signal(signal.SIGINT)  # Ctrl-C
        _out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert _one_error_line(err) == "stopped"


def _signaling_tls_files(tmp_path: Path) -> dict[str, Path]:
    """Certificate and key files for ``rtckit signaling --cert/--key``: good ones, another
    certificate's key, an expired certificate."""
    import datetime as dt

    from rtckit.certs import CertificateSpec, KeyType, create_self_signed

    spec = CertificateSpec(hosts=["127.0.0.1"], key_type=KeyType.EC, days=5)
    good = create_self_signed(spec).save(tmp_path / "good")
    other = create_self_signed(spec).save(tmp_path / "other")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = create_self_signed(spec, now=past).save(tmp_path / "expired")
    return {
        "cert": good.fullchain,
        "key": good.key,
        "other-key": other.key,
        "expired-cert": expired.fullchain,
        "expired-key": expired.key,
        "missing": tmp_path / "missing.pem",
    }


@pytest.mark.parametrize(
    ("cert", "key", "error"),
    [
        ("cert", None, "--cert and --key go together: give both (wss://) or neither"),
        (None, "key", "--cert and --key go together: give both (wss://) or neither"),
        ("missing", "key", "--cert/--key: certificate file {missing} does not exist"),
        ("cert", "missing", "--cert/--key: private key file {missing} does not exist"),
        ("key", "key", "--cert/--key: {key} holds no PEM or DER certificate"),
        ("cert", "cert", "--cert/--key: {cert}: not a private key"),
        ("cert", "other-key", "--cert/--key: {cert} and {other-key}: the private key does not"),
        ("expired-cert", "expired-key", "--cert/--key: certificate "),
    ],
)
def test_signaling_refuses_bad_tls_files_in_one_line(
    cert: str | None,
    key: str | None,
    error: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rtckit signaling --cert FILE --key FILE``: both or neither, files it can read, a key
    that belongs to the certificate, a certificate still valid; each refusal one line, before
    the server starts."""
    files = _signaling_tls_files(tmp_path)
    argv = ["signaling", "--open", "--port", "0"]
    if cert is not None:
        argv += ["--cert", str(files[cert])]
    if key is not None:
        argv += ["--key", str(files[key])]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    expected = error.format_map({name: str(path) for name, path in files.items()})
    assert line.startswith(f"rtckit: error: {expected}"), line
    assert "rtckit signaling on" not in captured.out
