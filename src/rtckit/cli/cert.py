"""``rtckit cert``: create and inspect HTTPS certificates for development.

``rtckit cert create`` writes a server certificate and key, self-signed or issued by a local CA
(``--ca DIR``, created there on first use), optionally with a PKCS#12 keystore for Java
``keytool`` users. ``rtckit cert show`` prints what a certificate file holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from cryptography import x509

from rtckit import certs, net
from rtckit.cli import os_error_text
from rtckit.errors import CertificateError, ConfigurationError

__all__ = ["register"]

_PKCS12_SUFFIXES = (".p12", ".pfx")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rtckit cert`` and its sub-commands."""
    parser = subparsers.add_parser(
        "cert",
        help="create and inspect HTTPS certificates (self-signed or from a local CA)",
        description="Create and inspect HTTPS certificates for development. Browsers open "
        "the camera only on https:// origins (or http://localhost).",
    )
    commands = parser.add_subparsers(dest="cert_command", metavar="SUBCOMMAND", required=True)

    create = commands.add_parser(
        "create",
        help="write a server certificate and key (self-signed, or issued by a local CA)",
        description="Write cert.pem, key.pem and fullchain.pem in --out (and keystore.p12 "
        "with a PKCS#12 password). With --ca DIR the certificate is issued by the local CA in "
        "DIR, which is created there on first use: trust that CA once on each device.",
    )
    create.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="HOST",
        help="DNS name or IP address (IPv4/IPv6) the certificate is for; repeat it "
        f"(default: {', '.join(certs.DEFAULT_HOSTS)})",
    )
    create.add_argument(
        "--lan",
        action="store_true",
        help="also add this machine's LAN addresses, so phones can use https://<address>",
    )
    create.add_argument(
        "--days",
        type=int,
        default=certs.DEFAULT_DAYS,
        help=f"validity in days (default: {certs.DEFAULT_DAYS}; at most 825 for Apple devices)",
    )
    create.add_argument(
        "--key-type",
        choices=[kind.value for kind in certs.KeyType],
        default=certs.KeyType.RSA.value,
        help="rsa: RSA 2048 (default, like keytool -keyalg RSA); ec: ECDSA P-256",
    )
    create.add_argument("--common-name", help="subject common name (default: the first host)")
    create.add_argument(
        "--ca",
        type=Path,
        metavar="DIR",
        help="issue from the local CA in DIR (created there if DIR has none); "
        "without it the certificate is self-signed",
    )
    create.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory to write into"
    )
    password = create.add_mutually_exclusive_group()
    password.add_argument(
        "--p12-password",
        metavar="PASSWORD",
        help="also write keystore.p12 protected by PASSWORD (visible to other local users "
        "in the process list: prefer --p12-password-env)",
    )
    password.add_argument(
        "--p12-password-env",
        metavar="VAR",
        help="also write keystore.p12, protected by the password in environment variable VAR",
    )
    create.add_argument(
        "--alias",
        help="alias (friendly name) of the key in keystore.p12, as keytool lists it "
        "(default: rtckit)",
    )
    create.set_defaults(handler=_create)

    show = commands.add_parser(
        "show",
        help="print a certificate's subject, hosts, validity and fingerprint",
        description="Print what a certificate file holds: PEM (one or a chain), DER, or a "
        "PKCS#12 keystore (.p12/.pfx, with its password).",
    )
    show.add_argument("file", type=Path, metavar="FILE")
    show_password = show.add_mutually_exclusive_group()
    show_password.add_argument("--password", help="password of a PKCS#12 keystore")
    show_password.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding that password"
    )
    show.set_defaults(handler=_show)


def _password(value: str | None, env: str | None, option: str) -> str | None:
    if value is not None:
        return value
    if env is None:
        return None
    secret = os.environ.get(env)
    if not secret:
        raise ConfigurationError(f"{option} {env}: environment variable {env} is not set or empty")
    return secret


def _date(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _days_from_now(issued: certs.IssuedCertificate) -> int:
    return round((issued.not_valid_after - dt.datetime.now(dt.UTC)) / dt.timedelta(days=1))


def _trust_hints(ca: certs.LocalCA, ca_dir: Path) -> list[str]:
    pem = ca_dir / certs.CA_CERT_FILE
    der = ca_dir / certs.CA_DER_FILE
    name = ca.common_name
    return [
        "Trust the CA once on each device that opens the site:",
        f"  Debian/Ubuntu: sudo cp {pem} /usr/local/share/ca-certificates/rtckit-ca.crt"
        " && sudo update-ca-certificates",
        f'  Chrome on Linux: certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "{name}" -i {pem}',
        "  Firefox: Settings > Privacy & Security > Certificates > View Certificates > "
        f"Authorities > Import {pem}",
        "  macOS: sudo security add-trusted-cert -d -r trustRoot "
        f"-k /Library/Keychains/System.keychain {pem}",
        f"  Windows: certutil -addstore -f ROOT {pem}",
        f"  Android, iPhone: copy {der} to the phone and install it as a CA certificate "
        "(iPhone: then enable it in Settings > General > About > Certificate Trust Settings)",
        f"  Check the fingerprint on the device: {ca.fingerprint}",
    ]


def _create(args: argparse.Namespace) -> int:
    hosts = list(args.hosts) if args.hosts else list(certs.DEFAULT_HOSTS)
    if args.lan:
        hosts += [str(address) for address in net.lan_addresses()]
    p12_password = _password(args.p12_password, args.p12_password_env, "--p12-password-env")
    if args.alias is not None and p12_password is None:
        raise ConfigurationError("--alias names the key in keystore.p12: give --p12-password-env")
    spec = certs.CertificateSpec(
        hosts=hosts,
        days=args.days,
        key_type=certs.KeyType(args.key_type),
        common_name=args.common_name,
    )
    alias = args.alias if args.alias is not None else "rtckit"
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CertificateError(f"--out {out} is not a directory")
    lines: list[str] = []
    ca: certs.LocalCA | None = None
    if args.ca is not None:
        ca_dir: Path = args.ca
        if certs.LocalCA.exists(ca_dir):
            ca = certs.LocalCA.load(ca_dir)
            lines.append(f"Using the local CA in {ca_dir} ({ca.common_name})")
        else:
            ca = certs.LocalCA.create(key_type=spec.key_type)
            try:
                ca.save(ca_dir)
            except OSError as exc:
                raise CertificateError(
                    f"--ca {ca_dir}: cannot write: {os_error_text(exc)}"
                ) from exc
            lines.append(f"Created a local CA in {ca_dir} ({ca.common_name})")
        lines += [
            f"  CA certificate: {ca_dir / certs.CA_CERT_FILE}"
            f" (phones: {ca_dir / certs.CA_DER_FILE})",
            f"  CA private key: {ca_dir / certs.CA_KEY_FILE} (keep it private)",
            f"  CA valid until: {_date(ca.certificate.not_valid_after_utc)}",
        ]
        issued = ca.issue(spec)
    else:
        issued = certs.create_self_signed(spec)
    try:
        files = issued.save(out)
        keystore = (
            None
            if p12_password is None
            else issued.save_pkcs12(out / certs.KEYSTORE_FILE, p12_password, alias=alias)
        )
    except OSError as exc:
        raise CertificateError(f"--out {out}: cannot write: {os_error_text(exc)}") from exc
    kind = "self-signed certificate" if ca is None else "certificate issued by the local CA"
    lines += [
        f"Wrote a {kind} for {', '.join(issued.hosts)} "
        f"({certs.key_description(issued.certificate)})",
        f"  certificate: {files.cert}",
        f"  private key: {files.key} (keep it private)",
        f"  full chain:  {files.fullchain} (what servers send)",
    ]
    if keystore is not None:
        lines.append(f'  keystore:    {keystore} (PKCS#12, alias "{alias}")')
    lines += [
        f"  SHA-256 fingerprint: {issued.fingerprint}",
        f"  valid until: {_date(issued.not_valid_after)} ({_days_from_now(issued)} days)",
    ]
    if spec.days > 825:
        lines.append("  note: Apple devices refuse certificates valid for more than 825 days")
    if ca is not None and args.ca is not None:
        lines += _trust_hints(ca, args.ca)
    else:
        lines += [
            "Browsers warn once per site about a self-signed certificate (Advanced > Proceed).",
            "To avoid the warning, issue it from a local CA you trust once: add --ca DIR.",
        ]
    print("\n".join(lines))
    return 0


def _describe(cert: x509.Certificate, index: int, now: dt.datetime) -> list[str]:
    left = certs.days_left(cert, now=now)
    if now < cert.not_valid_before_utc:
        status = "NOT YET VALID"
    elif now > cert.not_valid_after_utc:
        status = "EXPIRED"
    else:
        status = f"{left} days left"
    hosts = certs.certificate_hosts(cert)
    return [
        f"[{index}] subject: {cert.subject.rfc4514_string()}",
        f"    issuer:  {cert.issuer.rfc4514_string()}",
        f"    hosts:   {', '.join(hosts) if hosts else '(no subjectAltName)'}",
        f"    key:     {certs.key_description(cert)}",
        f"    CA:      {'yes' if certs.is_ca_certificate(cert) else 'no'}",
        f"    valid from:  {_date(cert.not_valid_before_utc)}",
        f"    valid until: {_date(cert.not_valid_after_utc)} ({status})",
        f"    SHA-256 fingerprint: {certs.fingerprint(cert)}",
    ]


def _show(args: argparse.Namespace) -> int:
    file: Path = args.file
    password = _password(args.password, args.password_env, "--password-env")
    lines: list[str] = []
    if password is not None or file.suffix.lower() in _PKCS12_SUFFIXES:
        if password is None:
            raise CertificateError(
                f"{file} is a PKCS#12 keystore: give its password with --password-env VAR"
            )
        issued = certs.IssuedCertificate.load_pkcs12(file, password)
        chain = [issued.certificate, *issued.chain]
        lines.append(
            f"{file}: PKCS#12 keystore, alias {issued.alias!r}, "
            f"private key {certs.key_description(issued.certificate)}"
        )
    else:
        chain = certs.load_certificates(file)
    count = len(chain)
    lines.append(f"{file}: {count} certificate{'s' if count > 1 else ''}")
    now = dt.datetime.now(dt.UTC)
    for index, cert in enumerate(chain, start=1):
        lines += _describe(cert, index, now)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: rtckit cert ...")
