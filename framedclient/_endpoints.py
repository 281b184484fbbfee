"""
Client endpoint strings, parsed with a useful error when the TLS extra is
missing; and readable names for endpoint objects.

Twisted's ``twisted.internet.endpoints`` imports its TLS names
(``optionsForClientTLS``, ``CertificateOptions``, ...) only when pyOpenSSL
is installed; without it, parsing a ``tls:`` or ``ssl:`` string fails with
``NameError: name 'optionsForClientTLS' is not defined``, which tells a user
nothing about what to install.  Both the library
(:meth:`~framedclient.client.FramedClient.from_endpoint`) and the runner's
option checks parse through :func:`client_from_string`, so they say the same.

Twisted's endpoint objects have no readable ``str()``: their ``repr()``
(``<TCP4ClientEndpoint object at 0x7f...>``) changes from run to run, so as a
connection's name in metrics labels, ``debug_state()`` and the status page it
would split one upstream into many series and tell the reader nothing.
:func:`endpoint_name` names them in endpoint-string form instead.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint

__all__ = ["TLS_EXTRA", "client_from_string", "endpoint_name"]

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


def _host_port(host: object, port: object) -> str:
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    # IPv6 literals in brackets, as in URLs, so the port stays readable.
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def endpoint_name(endpoint: object) -> str:
    """
    A stable, readable name for a client endpoint object: ``tcp:HOST:PORT``,
    ``tls:HOST:PORT``, ``unix:PATH``, like the endpoint strings that build
    them; an endpoint with its own ``__str__`` names itself; anything else is
    named by its class.

    Twisted's endpoints keep their address in private attributes and offer
    no public way to read it back, so this looks at them defensively: an
    attribute missing in some Twisted release degrades to the class name,
    never to an error.
    """
    cls = type(endpoint)
    if cls.__str__ is not object.__str__:
        return str(endpoint)
    name = cls.__name__
    inner = getattr(endpoint, "_wrappedEndpoint", None)
    if inner is not None:
        wrapper = getattr(endpoint, "_wrapperFactory", None)
        named = endpoint_name(inner)
        if getattr(wrapper, "__qualname__", "").startswith("wrapClientTLS."):
            address = named.split(":", 1)[1] if named.startswith("tcp:") else named
            return f"tls:{address}"
        return named
    path = getattr(endpoint, "_path", None)
    if path is not None and "UNIX" in name:
        return f"unix:{path.decode() if isinstance(path, bytes) else path}"
    host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", None)
    port = getattr(endpoint, "_port", None)
    if host is not None and port is not None:
        scheme = "ssl" if name.startswith("SSL") else "tcp"
        return f"{scheme}:{_host_port(host, port)}"
    return name
