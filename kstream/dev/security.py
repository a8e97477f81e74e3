"""The local broker's secured mode: SASL_SSL (SCRAM-SHA-512) with ACLs enforced.

What ``kstream dev broker start --security sasl_ssl`` adds to the plain broker:

* a throwaway CA and a broker certificate for ``127.0.0.1`` (and ``localhost``), made with the
  JDK's ``keytool`` (it comes with the ``java`` the broker needs anyway) and kept in
  ``<workdir>/security/``: clients trust ``ca.pem``;
* one ``SASL_SSL`` listener for clients and for the broker itself, SCRAM-SHA-512 only; the super
  user ``admin`` (for provisioning: topics, ACLs, users) gets its credentials when the data dir is
  formatted (``kafka-storage format --add-scram``), with a random password kept in a 0600 file;
* the ``StandardAuthorizer``: a principal may do only what an ACL allows it.

The controller listener stays PLAINTEXT on 127.0.0.1; the broker reaches its own controller there
as ``User:ANONYMOUS``, which is therefore a super user too. Clients never use that port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kstream.errors import LocalBrokerError

Security = Literal["plaintext", "sasl_ssl"]
SECURITY_MODES: tuple[Security, ...] = ("plaintext", "sasl_ssl")
SUPER_USER = "admin"
MECHANISM = "SCRAM-SHA-512"
_VALID_DAYS = "3650"
# Seven short JVM runs: the same start-up options as the broker's (C1 only, serial GC).
_KEYTOOL_JVM = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC")

# Appended to the plain broker's server.properties: in a .properties file the last value of a key
# wins, so the plain listener settings are replaced and everything else is kept.
_SASL_SSL_PROPERTIES = """
# --- security: SASL_SSL (SCRAM-SHA-512) with ACLs (kstream dev broker start --security sasl_ssl)
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={mechanism}
sasl.mechanism.inter.broker.protocol={mechanism}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
required username="{user}" password="{password}";
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={store_password}
ssl.key.password={store_password}
# The broker is a client of its own listener (inter-broker): it trusts the CA too.
ssl.truststore.type=PEM
ssl.truststore.location={ca}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{user};User:ANONYMOUS
"""


@dataclass(frozen=True)
class SecurityFiles:
    """Where the secured mode keeps its material (``<workdir>/security``, readable by its owner only)."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    @property
    def admin_password(self) -> Path:
        return self.folder / "admin.password"

    @property
    def client_config(self) -> Path:
        """A kstream settings file (``--config``) for the super user."""
        return self.folder / "client.toml"

    @property
    def _ca_store(self) -> Path:
        return self.folder / "ca.p12"

    @property
    def _store_password(self) -> Path:
        return self.folder / "store.password"


def security_files(workdir: Path) -> SecurityFiles:
    return SecurityFiles(workdir.resolve() / "security")


def ensure_material(files: SecurityFiles, timeout: float = 60.0) -> None:
    """Create the passwords, the CA and the broker keystore unless they exist (blocks: keytool)."""
    files.folder.mkdir(parents=True, exist_ok=True)
    files.folder.chmod(0o700)
    for path in (files.admin_password, files._store_password):
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(24))
    if files.keystore.exists() and files.ca.exists():
        return
    keytool = shutil.which("keytool")
    if keytool is None:
        raise LocalBrokerError("keytool (it comes with the JDK) is needed to make the broker's certificates: "
                               "install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)")
    for path in (files.keystore, files._ca_store, files.ca):
        path.unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", read_secret(files._store_password)]
    ca, broker = [*store, "-keystore", str(files._ca_store)], [*store, "-keystore", str(files.keystore)]
    san = "SAN=ip:127.0.0.1,dns:localhost"
    csr = files.folder / "broker.csr"
    signed = files.folder / "broker.pem"
    steps = [
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=kstream dev CA",
         "-ext", "bc:c", "-validity", _VALID_DAYS, *ca],
        ["-exportcert", "-rfc", "-alias", "ca", "-file", str(files.ca), *ca],
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=127.0.0.1",
         "-ext", san, "-validity", _VALID_DAYS, *broker],
        ["-certreq", "-alias", "broker", "-file", str(csr), *broker],
        ["-gencert", "-alias", "ca", "-infile", str(csr), "-outfile", str(signed), "-rfc", "-ext", san,
         "-validity", _VALID_DAYS, *ca],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca), *broker],
        ["-importcert", "-noprompt", "-alias", "broker", "-file", str(signed), *broker],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run([keytool, *_KEYTOOL_JVM, *step], capture_output=True, text=True, check=False, timeout=timeout)
        if done.returncode != 0:
            why = (done.stdout + done.stderr).strip().splitlines() or ["(no output)"]
            raise LocalBrokerError(f"keytool {step[0]} failed: {why[-1][:300]}")
    csr.unlink(missing_ok=True)
    signed.unlink(missing_ok=True)


def server_properties(files: SecurityFiles, *, port: int, controller_port: int) -> str:
    """The lines that turn the plain broker's ``server.properties`` into the secured one."""
    return _SASL_SSL_PROPERTIES.format(
        port=port, controller_port=controller_port, mechanism=MECHANISM, user=SUPER_USER,
        password=read_secret(files.admin_password), keystore=files.keystore, ca=files.ca,
        store_password=read_secret(files._store_password),
    )  # fmt: skip


def format_arguments(files: SecurityFiles) -> list[str]:
    """``kafka-storage format`` arguments that create the super user's SCRAM credentials.

    The tool takes them only on its command line: the development password is visible in the
    process list for the second the format takes (a production cluster creates users through
    the admin API instead)."""
    return ["--add-scram", f"{MECHANISM}=[name={SUPER_USER},password={read_secret(files.admin_password)}]"]


def client_properties(files: SecurityFiles) -> dict[str, str]:
    """librdkafka properties of a super-user client; the password by file, never inline."""
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": SUPER_USER,
        "sasl.password.file": str(files.admin_password),
        "ssl.ca.location": str(files.ca),
    }


def write_client_config(files: SecurityFiles, bootstrap: str) -> Path:
    """Write :attr:`SecurityFiles.client_config`, a kstream settings file for the super user."""
    lines = [f'bootstrap_servers = "{bootstrap}"', "", "[kafka]"]
    lines += [f'"{name}" = "{value}"' for name, value in client_properties(files).items()]
    _write_private(files.client_config, "\n".join(lines) + "\n")
    return files.client_config


def read_secret(path: Path) -> str:
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
