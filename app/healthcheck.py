"""`python -m app.healthcheck`: the container image's HEALTHCHECK. GET /api/health on this host's
port; exit 0 on 200, 1 otherwise (the reason goes to Docker's health log).

With a certificate set, the probe speaks HTTPS and trusts exactly the leaf certificate of
VIDEO_API_TLS_CERT_FILE (pinned: the only trust anchor, partial chains allowed). A loopback probe
cannot match a public host name, and the pin is stricter than a name: only the configured
certificate, within its validity, passes, so an expired one makes the container unhealthy."""

import http.client
import re
import ssl
import sys

from app.settings import ConfigError, Settings, load_settings

TIMEOUT_S = 4.0  # below the HEALTHCHECK's --timeout
# A wildcard HOST is probed on loopback; "::" is IPv6 only (asyncio sets IPV6_V6ONLY).
LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
_FIRST_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def pinned_context(cert_file: str) -> ssl.SSLContext:
    """A client context whose one trust anchor is the first certificate (the leaf) of cert_file."""
    with open(cert_file, "rb") as pem:
        leaf = _FIRST_PEM.search(pem.read())
    if leaf is None:
        raise ssl.SSLError(f"no certificate in {cert_file}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The pin replaces the name check; verification itself (CERT_REQUIRED) stays on.
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=leaf.group().decode("ascii"))
    return context


def probe(settings: Settings) -> None:
    """Raises unless the service on settings' port answers /api/health with 200."""
    host = LOOPBACK.get(settings.host, settings.host)
    # http.client ignores proxy variables, as the service's own requests do.
    connection: http.client.HTTPConnection
    if settings.tls_cert_file:
        context = pinned_context(settings.tls_cert_file)
        connection = http.client.HTTPSConnection(host, settings.port, timeout=TIMEOUT_S, context=context)
    else:
        connection = http.client.HTTPConnection(host, settings.port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", "/api/health")
        response = connection.getresponse()
        if response.status != 200:
            raise ConnectionError(f"/api/health answered {response.status}: {response.read(500)!r}")
    finally:
        connection.close()


def main() -> int:
    try:
        probe(load_settings())
    except (ConfigError, OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
