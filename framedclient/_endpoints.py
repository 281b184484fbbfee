"""
Client endpoint strings, parsed with a useful error when the TLS extra is
missing.

Twisted's ``twisted.internet.endpoints`` imports its TLS names
(``optionsForClientTLS``, ``CertificateOptions``, ...) only when pyOpenSSL
is installed; without it, parsing a ``tls:`` or ``ssl:`` string fails with
``NameError: name 'optionsForClientTLS' is not defined``, which tells a user
nothing about what to install.  Both the library
(:meth:`~framedclient.client.FramedClient.from_endpoint`) and the runner's
option checks parse through :func:`client_from_string`, so they say the same.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint

__all__ = ["TLS_EXTRA", "client_from_string"]

#: What to run to get TLS endpoints.
TLS_EXTRA = "pip install 'framedclient[tls]'"


def client_from_string(reactor: Any, description: str) -> IStreamClientEndpoint:
    """
    ``clientFromString(reactor, description)``.

    :raises ImportError: the string needs TLS and the TLS extra (pyOpenSSL,
        service_identity) is not installed; the message says how to install
        it.
    """
    from twisted.internet.endpoints import clientFromString

    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, description)  # type: ignore[no-untyped-call]
    except NameError as error:
        # Endpoint parsing has no other NameError: this is a TLS name that
        # Twisted could not import.
        raise ImportError(
            f"{description!r} needs TLS, and the TLS extra (pyOpenSSL, "
            f"service_identity) is not installed: {TLS_EXTRA}"
        ) from error
    return endpoint
