"""TLS for the service's port and for its calls to other hosts. The server side follows Mozilla's
intermediate profile (TLS 1.2 and 1.3, forward-secret AEAD ciphers, no session tickets); a
renewed certificate is loaded into the same context on SIGHUP, so new connections get it while
open ones carry on."""

import logging
import ssl

from app.settings import Settings

# Mozilla server-side TLS, intermediate profile (version 5.7): the TLS 1.2 ciphers; TLS 1.3's
# suites are OpenSSL's defaults, which are that profile's.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
log = logging.getLogger(__name__)


class TlsFilesError(OSError):
    """The certificate or key cannot be loaded; the message names the files, never their content."""


def _load_chain(context: ssl.SSLContext, settings: Settings) -> None:
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = (exc.reason or str(exc)) if isinstance(exc, ssl.SSLError) else exc.strerror
        raise TlsFilesError(
            f"VIDEO_API_TLS_CERT_FILE={settings.tls_cert_file!r} with VIDEO_API_TLS_KEY_FILE="
            f"{settings.tls_key_file!r} cannot be loaded: {reason}"
        ) from None


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The listening port's context, or None when no certificate is set (plain HTTP)."""
    if not settings.tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, settings)
    return context


def reload_certificate(context: ssl.SSLContext, settings: Settings) -> None:
    """Load the certificate files again (after a renewal); on failure the old pair stays in use."""
    try:
        _load_chain(context, settings)
    except TlsFilesError as exc:
        log.error("certificate not reloaded, the previous one stays in use: %s", exc)
        return
    log.info("certificate reloaded from %s", settings.tls_cert_file)


def client_context(settings: Settings) -> ssl.SSLContext:
    """For requests to the other hosts: their certificates verified against VIDEO_API_TLS_CA_FILE
    (the fleet's CA), or the system's trust store when it is empty."""
    context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
