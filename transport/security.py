"""Who may talk to a session's sockets.

On one machine the sockets are ipc files in a directory only this user can open ("auto" endpoints,
transport/links.py) or tcp on loopback. An endpoint any other machine can reach (tcp on another address,
or every interface) is refused unless the rig file names CURVE keys ([security]); with keys named, every
socket of the session uses ZeroMQ's CURVE (encrypted, and a peer proves it holds a key):

- a process that binds a socket is a CURVE server with the rig's server key pair, and a ZAP handler in
  that process admits only clients whose public key is in the authorized directory;
- a process that connects is a CURVE client with this machine's own key pair, and checks that the server
  holds the rig's server key.

A peer without an authorized key never completes the handshake: nothing it sends is delivered (not even
counted as malformed), so only key holders can send anything at all, a Shutdown included.

`cortexloop keys DIR` writes a key pair (zmq's certificate format: NAME.key public, NAME.key_secret both
halves, readable by this user only). Setting up keys on a rig: docs/live-rig.md.
"""

from __future__ import annotations

import ipaddress
import os
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class SecurityError(ValueError):
    """A socket that may not be opened as asked, or key files that cannot be used; says which and why."""


# -- endpoints -------------------------------------------------------------------------------------------


def tcp_host(endpoint: str) -> str | None:
    """The host of a tcp endpoint ("*" for every interface), None for any other transport."""
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[len("tcp://") :]
    if rest.startswith("["):  # [::1]:5555
        return rest[1 : rest.find("]")] if "]" in rest else rest
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return host.split(";")[-1]  # "source;dest": the address the connection goes to


def is_loopback(endpoint: str) -> bool:
    """True where no other machine can reach the endpoint: ipc and inproc, tcp on a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = tcp_host(endpoint)
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name, a host name: reachable from elsewhere
        return False


def require_keys_off_loopback(name: str, endpoint: str, keys) -> None:
    """Refuse to open `endpoint` without keys where another machine could reach it."""
    if keys is None and not is_loopback(endpoint):
        raise SecurityError(
            f"endpoints.{name} = {endpoint!r} is not on loopback: another machine could connect. "
            f"Name CURVE keys in the rig file ([security] server_key, client_key, "
            f'authorized_keys; `cortexloop keys DIR` makes a pair), or use "auto" (ipc) or '
            f"tcp://127.0.0.1:PORT on one machine"
        )


# -- key files -------------------------------------------------------------------------------------------


def _write_key_file(path: Path, public: bytes, secret: bytes | None) -> None:
    """One certificate in ZeroMQ's text format (what zmq.auth.load_certificate reads). The file is created
    with mode 0600 where it holds a secret (never readable by others, not even for a moment) and fails if it
    exists (a key pair is never overwritten: machines may already trust it)."""
    kind = "Secret" if secret is not None else "Public"
    lines = [
        f"#   ZeroMQ CURVE {kind} Certificate, made by cortexloop keys on "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "#   "
        + (
            "Keep it on this machine, readable by its user only."
            if secret is not None
            else "Copy it to the machines that should trust this key."
        ),
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret is not None else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_keys(directory: str | Path, name: str = "cortexloop") -> tuple[Path, Path]:
    """A new CURVE key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (both halves, mode 0600).
    Refuses to overwrite an existing pair."""
    if not name or "/" in name or name.startswith("."):
        raise SecurityError(f"key name {name!r}: a plain file name is needed")
    directory = Path(directory).expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    for p in (public_path, secret_path):
        if p.exists():
            raise SecurityError(
                f"{p} exists: a key pair is never overwritten (other machines may trust it); "
                f"choose another name or directory"
            )
    public, secret = zmq.curve_keypair()
    _write_key_file(secret_path, public, secret)
    _write_key_file(public_path, public, None)
    return public_path, secret_path


@dataclass(frozen=True)
class CurveKeys:
    """The keys one process uses: the rig's server pair (its secret only where this machine binds sockets),
    this machine's own client pair, and the directory of client public keys that servers admit."""

    server_public: bytes
    server_secret: bytes | None
    client_public: bytes
    client_secret: bytes
    authorized_dir: Path
    server_key_file: str = ""


def _load(key: str, path_text: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise SecurityError(f"security.{key} = {path_text!r}: no such key file (cortexloop keys DIR makes one)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as err:
        raise SecurityError(f"security.{key} = {path_text!r}: not a CURVE key file ({err})") from None
    if public is None or len(public) != 40:
        raise SecurityError(f"security.{key} = {path_text!r}: no public-key in it")
    if need_secret and (secret is None or len(secret) != 40):
        raise SecurityError(f"security.{key} = {path_text!r}: holds no secret key (name the .key_secret file)")
    mode = path.stat().st_mode & 0o777
    if secret is not None and mode & 0o077:
        raise SecurityError(
            f"security.{key} = {path_text!r} holds a secret key that others may read (mode "
            f"{oct(mode)}): chmod 600 {path}"
        )
    return public, secret


def load_keys(cfg) -> CurveKeys | None:
    """The keys a controller.config.SecurityConfig names, read and checked; None where it names none."""
    if not cfg.enabled:
        return None
    server_public, server_secret = _load("server_key", cfg.server_key, need_secret=False)
    client_public, client_secret = _load("client_key", cfg.client_key, need_secret=True)
    authorized = Path(cfg.authorized_keys).expanduser()
    if not authorized.is_dir():
        raise SecurityError(
            f"security.authorized_keys = {cfg.authorized_keys!r}: no such directory (it holds the "
            f"public keys, NAME.key, of the machines that may connect)"
        )
    if not any(authorized.glob("*.key")):
        raise SecurityError(
            f"security.authorized_keys = {cfg.authorized_keys!r}: no public key (*.key) in it: no one could connect"
        )
    return CurveKeys(server_public, server_secret, client_public, client_secret, authorized, cfg.server_key)


def keys_for(rig) -> CurveKeys | None:
    """The keys the rig file names (None: none, or no rig)."""
    return None if rig is None else load_keys(rig.security)


# -- sockets ---------------------------------------------------------------------------------------------

# One ZAP handler per ZeroMQ context: libzmq asks it about every CURVE client of every server socket there.
_authenticators: "weakref.WeakKeyDictionary[zmq.Context, ThreadAuthenticator]" = weakref.WeakKeyDictionary()


def authenticator(ctx: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """The context's ZAP handler (started once), admitting the client keys in keys.authorized_dir.

    Without a ZAP handler a CURVE server admits any client that knows its public key, and a public key is
    no secret: so a server socket is never opened without one."""
    auth = _authenticators.get(ctx)
    if auth is None or not auth.is_alive():
        auth = ThreadAuthenticator(ctx)
        auth.start()
        _authenticators[ctx] = auth
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth


def stop_authenticator(ctx: zmq.Context) -> None:
    """Stop the context's ZAP handler (its socket would keep the context from terminating). A process that
    ends needs not call it: the handler's thread is a daemon."""
    auth = _authenticators.pop(ctx, None)
    if auth is not None:
        auth.stop()


def as_server(sock: zmq.Socket, keys: CurveKeys, name: str = "") -> None:
    """Make sock a CURVE server (before bind)."""
    if keys.server_secret is None:
        raise SecurityError(
            f"security.server_key = {keys.server_key_file!r} holds only a public key, but this "
            f"process binds endpoints.{name}: it needs the .key_secret file"
        )
    authenticator(sock.context, keys)
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.curve_server = True


def as_client(sock: zmq.Socket, keys: CurveKeys) -> None:
    """Make sock a CURVE client of the rig's servers (before connect)."""
    sock.curve_secretkey = keys.client_secret
    sock.curve_publickey = keys.client_public
    sock.curve_serverkey = keys.server_public


def client_context(keys: CurveKeys | None) -> zmq.Context | None:
    """A context whose every new socket is a CURVE client (for a part that makes its own sockets, such as the
    Open Ephys source reading the simulated rig's broadcaster); None without keys (the part's default)."""
    if keys is None:
        return None
    ctx = zmq.Context()
    ctx.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
    ctx.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
    ctx.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    return ctx


def cmd_keys(args) -> int:
    """`cortexloop keys DIR [--name NAME]`: make a key pair and say where each half goes."""
    import sys

    try:
        public, secret = make_keys(args.dir, args.name)
    except (SecurityError, OSError) as err:
        print(f"cortexloop: {err}", file=sys.stderr)
        return 2
    import socket

    host = socket.gethostname()
    print(
        f"public key: {public}\n"
        f"  a machine's own pair: copy this file, renamed after the machine (e.g. {host}.key), into the "
        f"authorized_keys directory of every machine of the rig (this one too)\n"
        f"  the rig's server pair: every machine needs the secret file below instead\n"
        f"secret key: {secret} (mode 600: never readable by others, never in a shared or version-controlled "
        f"place)\n"
        f"rig file:   [security] client_key (a machine's own pair) or server_key (the server pair) = "
        f'"{secret}"; authorized_keys = the directory of public keys'
    )
    return 0
