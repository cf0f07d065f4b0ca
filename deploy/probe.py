"""Does the SuperLink at ``HOST:PORT`` speak what this SuperNode is about to speak?

Flower 1.39's SuperNode retries a plaintext connection to a TLS SuperLink forever
("Connection attempt failed, retrying"), with nothing that names the cause. The launch
script asks first, with one TLS handshake (standard library only, milliseconds)::

    python -m flowerbed.deploy.probe HOST:PORT tls CA.crt   # this node will use TLS
    python -m flowerbed.deploy.probe HOST:PORT plaintext     # this node will use --insecure

It prints one line and exits 0 when the two sides match, 2 when they don't (or the
certificate is not signed by the CA), and 1 when nothing listens there yet (the
SuperNode's own retries cover a SuperLink that starts later).
"""

from __future__ import annotations

import socket
import ssl
import sys

UNREACHABLE, MISMATCH = 1, 2


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def handshake(address: str, ca_file: str | None, timeout: float = 5.0) -> tuple[str, str]:
    """("tls" | "plaintext" | "untrusted" | "unreachable", detail) for the server there."""
    host, port = split_address(address)
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl._create_unverified_context()
    context.set_alpn_protocols(["h2"])  # gRPC's
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            return "tls", f"{tls.version()}"
    except ssl.SSLCertVerificationError as err:
        return "untrusted", err.verify_message or str(err)
    except (ssl.SSLError, ConnectionResetError, EOFError) as err:
        return "plaintext", f"{type(err).__name__}: {err}"
    except OSError as err:
        return "unreachable", str(err)


def verdict(address: str, mode: str, ca_file: str | None) -> tuple[int, str]:
    """(exit code, the line to print) for a node that will connect in ``mode``."""
    kind, detail = handshake(address, ca_file if mode == "tls" else None)
    if kind == "unreachable":
        return UNREACHABLE, f"probe: nothing answers at {address} yet ({detail}); the SuperNode will keep trying"
    if mode == "tls" and kind == "plaintext":
        return MISMATCH, (f"probe: the SuperLink at {address} speaks plaintext, this SuperNode TLS: start the "
                          "SuperLink with its certificates (deploy/superlink.sh without --insecure), or this "
                          "node with --insecure")
    if mode == "tls" and kind == "untrusted":
        return MISMATCH, (f"probe: the SuperLink at {address} has a certificate {ca_file} did not sign "
                          f"({detail}): use the CA that signed it (deploy/certs.sh's ca.crt)")
    if mode == "plaintext" and kind in ("tls", "untrusted"):
        return MISMATCH, (f"probe: the SuperLink at {address} speaks TLS, this SuperNode plaintext (--insecure): "
                          "drop --insecure and give it the CA (ROOT_CERT, deploy/certs.sh's ca.crt)")
    return 0, f"probe: {address} speaks {'TLS (' + detail + ')' if kind == 'tls' else 'plaintext'}, as this node"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[1] not in ("tls", "plaintext") or (args[1] == "tls") != (len(args) == 3):
        print("usage: python -m flowerbed.deploy.probe HOST:PORT (tls CA_FILE | plaintext)", file=sys.stderr)
        return MISMATCH
    code, line = verdict(args[0], args[1], args[2] if len(args) == 3 else None)
    print(line, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
