"""Debian's nginx run with the configuration in deploy/nginx: for `nginx -t`, and for a real nginx on loopback
in front of servers the caller starts (tests/test_deploy.py; bench/ can use it for several instances).

The files are used as they are; only what names the Docker host is rewritten: the upstream's servers, the
include path, the certificate paths, and the listening ports (the public 80 and 443 become the caller's).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = ROOT / "deploy" / "nginx"
SITE = NGINX_DIR / "conf.d" / "ahead.conf"
LOCATIONS = NGINX_DIR / "ahead" / "locations.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate for localhost: fullchain.pem and privkey.pem, as the config expects them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    chain, private = folder / "fullchain.pem", folder / "privkey.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return chain, private


def write_config(folder: Path, *, upstreams: Sequence[str], http_port: int, https_port: int) -> Path:
    """nginx.conf in `folder` around deploy/nginx's site, listening on 127.0.0.1 only; returns its path."""
    certs = folder / "certs"
    if not (certs / "fullchain.pem").exists():
        self_signed_certificate(certs)
    site = SITE.read_text()
    servers = "".join(f"    server {address} max_fails=1 fail_timeout=10s;\n" for address in upstreams)
    site = site.replace("    server app:8000 max_fails=1 fail_timeout=10s;\n", servers, 1)
    assert servers in site, "deploy/nginx/conf.d/ahead.conf: the upstream's `server app:8000 …` line moved"
    site = (site.replace("/etc/nginx/ahead/locations.conf", str(LOCATIONS))
            .replace("/etc/nginx/certs/", f"{certs}/")
            .replace("listen 80;", f"listen 127.0.0.1:{http_port};").replace("listen [::]:80;", "")
            .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
            .replace("listen [::]:443 ssl http2;", ""))
    (folder / "ahead.conf").write_text(site)
    conf = folder / "nginx.conf"
    conf.write_text(f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
daemon off;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/ahead.conf;
}}
""")
    return conf


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on `conf`: exit 0 and "syntax is ok" / "test is successful" when the configuration holds."""
    binary = nginx_binary()
    assert binary, "nginx is not installed"
    return subprocess.run([binary, "-t", "-p", str(conf.parent), "-e", str(conf.parent / "error.log"),
                           "-c", str(conf)], capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def running(conf: Path, *, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx serving `conf` in the foreground until the block ends; waits until `port` accepts connections."""
    import socket

    binary = nginx_binary()
    assert binary, "nginx is not installed"
    process = subprocess.Popen([binary, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"),
                                "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: " + (conf.parent / "error.log").read_text()) from None
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)
