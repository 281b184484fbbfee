"""
Client endpoint strings, checked when they are given and parsed with a
useful error when the TLS extra is missing; and readable names for endpoint
objects.

Twisted parses ``tcp:127.0.0.1:99999`` into an endpoint that fails only when
it connects (so a client made from it reports ``Unavailable`` for ever,
far from the typo), and answers ``tcp:`` with a ``TypeError`` about
``TCP4ClientEndpoint.__init__``'s arguments.  :func:`client_from_string`
refuses both at once with a :exc:`ValueError` that quotes the string, says
what is wrong (no host, no port, a port out of range, no socket path) and
the form expected.

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

:func:`describe_listen_failure` says in one line why listening failed; it
is here, below everything, because the reference server
(``python -m framedclient.server``) and the runner both report it.
"""

from __future__ import annotations

import errno
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure

__all__ = [
    "TLS_EXTRA",
    "check_endpoint_string",
    "client_from_string",
    "describe_listen_failure",
    "endpoint_name",
]

#: What to run to get TLS endpoints.
TLS_EXTRA = "pip install 'framedclient[tls]'"


#: The form of each endpoint type checked here, for error messages.
_FORMS = {
    "tcp": "tcp:HOST:PORT",
    "tls": "tls:HOST:PORT",
    "ssl": "ssl:HOST:PORT",
    "unix": "unix:PATH",
}


def _fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    The type, positional and ``key=value`` fields of an endpoint string, as
    Twisted splits them (``:`` separates fields, ``\\`` escapes the next
    character, so ``tcp:\\:\\:1:80`` is host ``::1``).
    """
    fields: list[str] = []
    current: list[str] = []
    characters = iter(description)
    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(character)
    fields.append("".join(current))
    positional: list[str] = []
    named: dict[str, str] = {}
    for field in fields[1:]:
        key, equals, value = field.partition("=")
        if equals:
            named[key] = value
        else:
            positional.append(field)
    return fields[0].strip().lower(), positional, named


def check_endpoint_string(description: str) -> None:
    """
    Refuse an obviously malformed ``tcp:``, ``tls:``, ``ssl:`` or ``unix:``
    string before Twisted parses it (other types are left to Twisted and
    their plugins).

    :raises ValueError: no host, no port, a port that is not a number from
        1 to 65535, or no socket path; the message quotes ``description``
        and shows the form expected.
    """
    scheme, positional, named = _fields(description)
    form = _FORMS.get(scheme)
    if form is None:
        return
    expected = f"; expected {form}"
    if scheme == "unix":
        path = named.get("path", positional[0] if positional else "")
        if not path:
            raise ValueError(f"{description!r}: no socket path{expected}")
        return
    if description.partition(":")[2].startswith("["):
        raise ValueError(
            f"{description!r}: an IPv6 address is written with its colons "
            f"escaped, not in brackets ({scheme}:\\:\\:1:PORT){expected}"
        )
    host = named.get("host", positional[0] if positional else "")
    port = named.get("port", positional[1] if len(positional) > 1 else "")
    if not host.strip():
        raise ValueError(f"{description!r}: no host{expected}")
    if not port.strip():
        raise ValueError(f"{description!r}: no port{expected}")
    if not port.strip().isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{description!r}: the port must be a port number (1-65535), got "
            f"{port!r}{expected}"
        )


def client_from_string(reactor: Any, description: str) -> IStreamClientEndpoint:
    """
    ``clientFromString(reactor, description)``, with the string checked
    first (:func:`check_endpoint_string`).

    :raises ValueError: a malformed string, or one Twisted cannot parse
        (an unknown type, a bad option); the message quotes it.
    :raises ImportError: the string needs TLS and the TLS extra (pyOpenSSL,
        service_identity) is not installed; the message says how to install
        it.
    """
    from twisted.internet.endpoints import clientFromString

    check_endpoint_string(description)
    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, description)  # type: ignore[no-untyped-call]
    except NameError as error:
        # Endpoint parsing has no other NameError: this is a TLS name that
        # Twisted could not import.
        raise ImportError(
            f"{description!r} needs TLS, and the TLS extra (pyOpenSSL, "
            f"service_identity) is not installed: {TLS_EXTRA}"
        ) from error
    except (TypeError, ValueError) as error:
        # Twisted's own words (an unknown type, arguments missing from a
        # plugin's parser, a timeout that is not a number), with the string.
        hint = ""
        if "://" in description:
            url = urlsplit(description)
            kind = "tls" if url.scheme in ("https", "rediss", "tls") else "tcp"
            try:
                port = url.port
            except ValueError:  # not a number: say nothing about it
                port = None
            where = f"{url.hostname}:{port}" if url.hostname and port else "HOST:PORT"
            hint = (
                f"; a URL is not an endpoint string: write '{kind}:{where}' "
                f"(password and database are keywords: password=, db=)"
                if url.scheme.startswith("redis")
                else f"; a URL is not an endpoint string: write '{kind}:{where}'"
            )
        elif "Unknown endpoint type" in str(error):
            hint = (
                f"; an endpoint string starts with its type: 'tcp:{description}' "
                f"(or tls:HOST:PORT, unix:PATH)"
            )
        raise ValueError(
            f"{description!r} is not a client endpoint string Twisted can "
            f"parse: {error}{hint}"
        ) from None
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


def describe_listen_failure(failure: Failure) -> str:
    """
    Why listening failed, in one line that says what to do when the port is
    taken (the common case: another instance is still running).

    Unwraps the ``FirstError`` of a ``gatherResults`` over several
    listeners.
    """
    error = failure.value
    sub = getattr(error, "subFailure", None)
    if sub is not None:
        error = sub.value
    if isinstance(error, CannotListenError):
        where = f"{error.interface or '*'}:{error.port}"
        if getattr(error.socketError, "errno", None) == errno.EADDRINUSE:
            return (
                f"port {error.port} is already in use ({where}): stop the "
                f"process listening there or choose another port"
            )
        reason = getattr(error.socketError, "strerror", None) or error.socketError
        return f"cannot listen on {where}: {reason}"
    return " ".join(str(error).split()) or type(error).__name__
