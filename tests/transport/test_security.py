"""Who may talk to a session's sockets: loopback without keys, CURVE keys for anything else, strangers refused."""

import os
import stat
import threading
import time

import pytest
import zmq

from contract import messages as m
from controller.cli import main as cli_main
from controller.config import RigFileError, load_rig, parse_rig, with_overrides
from tests.helpers import ROOT, free_port, openephys_rig, small_rig
from transport.launch import run_session
from transport.links import bind, resolve_endpoints
from transport.processes.acquisition import VirtualCortexService
from transport.security import SecurityError, keys_for, make_keys, stop_authenticator
from transport.zmq_parts import ZmqAcquisitionSource


@pytest.fixture
def keyring(tmp_path):
    """The rig's server pair, this machine's client pair (authorized), and a stranger's pair (not)."""
    d = tmp_path / "keys"
    make_keys(d, "rig-server")
    client_pub, _ = make_keys(d, "this-machine")
    make_keys(d, "stranger")
    (d / "authorized").mkdir()
    (d / "authorized" / "this-machine.key").write_bytes(client_pub.read_bytes())
    return {
        "server_key": str(d / "rig-server.key_secret"),
        "client_key": str(d / "this-machine.key_secret"),
        "authorized_keys": str(d / "authorized"),
    }


# -- the rig file -----------------------------------------------------------------------------------------


def _rig_with(endpoints=None, security=None):
    data = load_rig(ROOT / "rigs" / "sim.toml").model_dump()
    data["endpoints"].update(endpoints or {})
    data["security"].update(security or {})
    return parse_rig(data, "rig.toml")


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://*:5555",
        "tcp://0.0.0.0:5555",
        "tcp://192.168.1.30:5601",
        "tcp://gpu-server:5603",
        "tcp://127.0.0.1;10.0.0.2:5555",
    ],
)
def test_an_endpoint_off_loopback_without_keys_is_refused_naming_the_key(endpoint):
    with pytest.raises(
        RigFileError, match=r"endpoints\.model = .* is not on loopback.*under \[security\] \(server_key"
    ):
        _rig_with({"model": endpoint})


def test_loopback_and_ipc_endpoints_need_no_keys_and_keys_admit_any_endpoint(keyring):
    rig = _rig_with(
        {
            "model": "tcp://127.0.0.1:5603",
            "presenter_plans": "tcp://[::1]:5601",
            "controller_inbox": "ipc:///tmp/x",
            "acquisition_pub": "tcp://localhost:5600",
        }
    )
    assert keys_for(rig) is None
    rig = _rig_with({"model": "tcp://10.0.0.2:5603"}, keyring)
    keys = keys_for(rig)
    assert keys is not None and keys.server_secret is not None


def test_security_keys_come_all_together_as_absolute_paths_and_endpoints_name_a_known_transport(keyring):
    with pytest.raises(RigFileError, match=r"authorized_keys, client_key not set"):
        _rig_with(security={"server_key": keyring["server_key"]})
    with pytest.raises(RigFileError, match=r"client_key = 'keys/c.key_secret': give an absolute path"):
        _rig_with(security={**keyring, "client_key": "keys/c.key_secret"})
    with pytest.raises(RigFileError, match=r"model = 'pgm://eth0;239.0.0.1:5555': an endpoint is"):
        _rig_with({"model": "pgm://eth0;239.0.0.1:5555"})
    # The example rigs across machines name their keys (files each machine makes with cortexloop keys).
    for name in ("lsl", "openephys"):
        assert load_rig(ROOT / "rigs" / f"{name}.toml").security.enabled


def test_key_files_that_cannot_be_used_are_refused_by_name(keyring, tmp_path):
    rig = _rig_with({"model": "tcp://10.0.0.2:5603"}, {**keyring, "client_key": str(tmp_path / "none.key_secret")})
    with pytest.raises(SecurityError, match=r"security\.client_key = .*none\.key_secret.*no such key file"):
        keys_for(rig)
    os.chmod(keyring["client_key"], 0o644)
    with pytest.raises(SecurityError, match=r"security\.client_key .* others may read.*chmod 600"):
        keys_for(_rig_with(security=keyring))
    os.chmod(keyring["client_key"], 0o600)
    with pytest.raises(SecurityError, match=r"security\.client_key .*holds no secret key"):
        keys_for(_rig_with(security={**keyring, "client_key": keyring["client_key"].replace(".key_secret", ".key")}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SecurityError, match=r"security\.authorized_keys = .*no public key"):
        keys_for(_rig_with(security={**keyring, "authorized_keys": str(empty)}))


def test_the_launcher_names_a_bad_key_file_before_starting_anything(keyring, tmp_path):
    from transport.launch import SessionFailed

    rig = with_overrides(small_rig(), security={**keyring, "server_key": str(tmp_path / "gone.key_secret")})
    with pytest.raises(SessionFailed, match=r"security\.server_key = .*gone\.key_secret.*no such key file"):
        run_session(rig, tmp_path / "s")
    assert not (tmp_path / "s" / "session.sqlite").exists()


# -- cortexloop keys --------------------------------------------------------------------------------------


def test_cortexloop_keys_makes_a_pair_whose_secret_only_this_user_reads(tmp_path, capsys):
    old = os.umask(0)  # the most permissive umask: the modes come from the code, not from it
    try:
        assert cli_main(["keys", str(tmp_path / "k"), "--name", "stim-pc"]) == 0
    finally:
        os.umask(old)
    secret, public = tmp_path / "k" / "stim-pc.key_secret", tmp_path / "k" / "stim-pc.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    pub, sec = zmq.auth.load_certificate(secret)
    assert zmq.auth.load_certificate(public) == (pub, None) and len(sec) == 40
    assert zmq.curve_public(sec) == pub  # the two halves belong together
    assert str(secret) in capsys.readouterr().out
    # A pair is never overwritten (machines may already trust it).
    assert cli_main(["keys", str(tmp_path / "k"), "--name", "stim-pc"]) == 2
    assert zmq.auth.load_certificate(secret)[1] == sec


# -- sockets ----------------------------------------------------------------------------------------------


def test_a_socket_off_loopback_is_not_opened_without_keys():
    """Endpoints may come from an endpoints file rather than the checked rig: refused where they are used too."""
    sock = zmq.Context.instance().socket(zmq.PULL)
    try:
        with pytest.raises(SecurityError, match=r"endpoints\.controller_inbox = 'tcp://\*:5602' is not on loopback"):
            bind(sock, "controller_inbox", "tcp://*:5602", None)
    finally:
        sock.close(linger=0)


def test_auto_endpoints_are_ipc_sockets_in_a_directory_only_this_user_opens(tmp_path):
    old = os.umask(0)
    try:
        endpoints = resolve_endpoints(load_rig(ROOT / "rigs" / "sim.toml").endpoints, tmp_path / "s")
        long_dir = tmp_path / ("x" * 90)  # too long for an ipc path: a temporary directory instead
        long_endpoints = resolve_endpoints(load_rig(ROOT / "rigs" / "sim.toml").endpoints, long_dir)
    finally:
        os.umask(old)
    for eps in (endpoints, long_endpoints):
        dirs = {os.path.dirname(e[len("ipc://") :]) for e in eps.values()}
        assert all(e.startswith("ipc://") for e in eps.values()) and len(dirs) == 1
        assert stat.S_IMODE(os.stat(dirs.pop()).st_mode) == 0o700


def _stranger(ctx, kind, endpoint, keyring, how):
    """A peer of the rig's socket: plain (no CURVE), or CURVE with the stranger's own key pair, or with the
    authorized client pair but the wrong server key."""
    sock = ctx.socket(kind)
    d = os.path.dirname(keyring["server_key"])
    if how == "unauthorized key":
        pub, sec = zmq.auth.load_certificate(os.path.join(d, "stranger.key_secret"))
        sock.curve_publickey, sock.curve_secretkey = pub, sec
        sock.curve_serverkey = zmq.auth.load_certificate(keyring["server_key"])[0]
    elif how == "wrong server key":
        pub, sec = zmq.auth.load_certificate(keyring["client_key"])
        sock.curve_publickey, sock.curve_secretkey = pub, sec
        sock.curve_serverkey = zmq.auth.load_certificate(os.path.join(d, "stranger.key"))[0]
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


STRANGERS = ("plain", "unauthorized key", "wrong server key")


def test_with_keys_the_session_pair_works_and_a_peer_without_the_key_gets_and_delivers_nothing(keyring):
    """The virtual cortex process's sockets (a PUB of spikes and heartbeats, a PULL for event codes and
    Shutdown) and the controller's acquisition part, over tcp on every interface, with CURVE keys."""
    pub_port, events_port = free_port(), free_port()
    rig = with_overrides(
        small_rig(speed="realtime"),
        security=keyring,
        endpoints={
            "acquisition_pub": f"tcp://127.0.0.1:{pub_port}",
            "acquisition_events": f"tcp://127.0.0.1:{events_port}",
            "openephys_pub": "off",
        },
    )
    endpoints = {
        "acquisition_pub": f"tcp://127.0.0.1:{pub_port}",
        "acquisition_events": f"tcp://127.0.0.1:{events_port}",
    }
    # Each side in its own context, as in its own process (each has its own ZAP handler).
    server_ctx, client_ctx, stranger_ctx = zmq.Context(), zmq.Context(), zmq.Context()
    cortex = VirtualCortexService(
        rig, {"acquisition_pub": f"tcp://*:{pub_port}", "acquisition_events": f"tcp://*:{events_port}"}, ctx=server_ctx
    )
    running = threading.Thread(target=cortex.run, daemon=True)
    running.start()
    listeners = {how: _stranger(stranger_ctx, zmq.SUB, endpoints["acquisition_pub"], keyring, how) for how in STRANGERS}
    senders = {
        how: _stranger(stranger_ctx, zmq.PUSH, endpoints["acquisition_events"], keyring, how) for how in STRANGERS
    }
    source = ZmqAcquisitionSource(endpoints, ctx=client_ctx, rig=rig)
    try:
        # The key holder hears the cortex: its description, then spikes.
        info = source.describe(timeout_s=20)
        assert info.get("n_neurons") == 8
        # A batch every 20 ms of wall clock: eleven come within a second, or within ten on a busy machine.
        end, batches = time.monotonic() + 10.0, 0
        while batches <= 10 and time.monotonic() < end:
            batches += sum(isinstance(x, m.SpikeBatch) for x in source.poll(0.1))
        assert batches > 10
        # The strangers: each tells the cortex to stop, and sends junk; none hears anything.
        for how, sock in senders.items():
            for msg in ([b"junk"], m.encode(m.Shutdown(f"from a peer with {how}"))):
                try:
                    sock.send_multipart(msg, zmq.NOBLOCK)
                except zmq.Again:  # no connection was ever made: ZeroMQ has nowhere to queue it
                    pass
        time.sleep(1.5)
        for how, sock in listeners.items():
            assert not sock.poll(0), f"a peer with {how} received from the cortex"
        assert running.is_alive(), "a stranger's Shutdown stopped the cortex"
        assert cortex.receiver.malformed == 0  # nothing from them reached the receiver, not even to be counted
        assert source.poll(0.5)  # and the key holder still hears it
    finally:
        source.close()  # the key holder's Shutdown: the cortex stops
        running.join(timeout=10)
        stopped = not running.is_alive()
        cortex.close()
        for s in [*listeners.values(), *senders.values()]:
            s.close(linger=0)
        stop_authenticator(server_ctx)
        for c in (client_ctx, stranger_ctx, server_ctx):
            c.term()
    assert stopped, "the key holder's Shutdown did not stop the cortex"


def test_a_whole_session_runs_with_keys_on_every_socket(keyring, tmp_path):
    """Every process of `cortexloop run` (cortex, model worker, presenter, controller) with CURVE on every
    socket: the session completes as it does without keys."""
    rig = with_overrides(small_rig(n_trials=3), security=keyring, model={"kind": "baseline"})
    summary = run_session(rig, tmp_path / "keyed")
    assert summary["status"] == "completed" and summary["trials_done"] >= 1
    assert summary["spikes_received"] > 0 and summary["spikes_lost"] == 0
    assert summary["plans_on_time_share"] == 1.0  # the model worker answered every plan: its socket works too


def test_the_simulated_open_ephys_broadcaster_uses_the_keys_too(keyring, tmp_path):
    """The virtual cortex's Open Ephys socket is one of the session's: with keys, the controller's Open Ephys
    source reads it as a CURVE client (and tells the simulated recording system to stop through a keyed socket)."""
    rig = with_overrides(openephys_rig(small_rig(n_trials=2)), security=keyring, model={"kind": "baseline"})
    summary = run_session(rig, tmp_path / "oe-keyed")
    assert summary["status"] == "completed" and summary["spikes_received"] > 0


def test_a_refused_key_looks_like_silence_and_the_session_says_what_to_check(keyring, tmp_path):
    """This machine's key not among the cortex's authorized ones: nothing is ever heard from the stream, and the
    session's end names the keys as what to look at."""
    from contract.parts import SessionAbort
    from controller.clocks import make_clock
    from controller.engine import SessionEngine, SessionParts
    from records.store import SessionStore
    from stimulus.pools import make_pools
    from transport.zmq_parts import ZmqModel, ZmqPresenter

    only_stranger = tmp_path / "keys" / "only-stranger"
    only_stranger.mkdir()
    (only_stranger / "stranger.key").write_bytes((tmp_path / "keys" / "stranger.key").read_bytes())
    rig = with_overrides(
        small_rig(speed="realtime"),
        security={**keyring, "authorized_keys": str(only_stranger)},
        endpoints={"openephys_pub": "off"},
    )
    endpoints = resolve_endpoints(rig.endpoints, tmp_path / "s")
    server_ctx, client_ctx = zmq.Context(), zmq.Context()
    cortex = VirtualCortexService(rig, endpoints, ctx=server_ctx)
    running = threading.Thread(target=cortex.run, daemon=True)
    running.start()
    store = SessionStore.create(tmp_path / "s", rig.model_dump_json())
    parts = SessionParts(
        make_clock("realtime"),
        ZmqAcquisitionSource(endpoints, ctx=client_ctx, rig=rig),
        ZmqPresenter(endpoints, ctx=client_ctx, rig=rig),
        ZmqModel(endpoints, ctx=client_ctx, rig=rig),
        "processes",
    )
    engine = SessionEngine(rig, store, parts, make_pools(rig.images))
    try:
        with pytest.raises(
            SessionAbort,
            match=r"did not describe its stream within 3 s \(the sockets use CURVE "
            r"keys: a refused key looks like silence.*authorized_keys",
        ):
            engine.start(timeout_s=3)
    finally:
        engine.close()
        store.close()
        # The engine's Shutdown was refused too; the one key the cortex admits here stops it.
        admitted = server_ctx.socket(zmq.PUSH)
        admitted.curve_publickey, admitted.curve_secretkey = zmq.auth.load_certificate(
            tmp_path / "keys" / "stranger.key_secret"
        )
        admitted.curve_serverkey = zmq.auth.load_certificate(keyring["server_key"])[0]
        admitted.connect(endpoints["acquisition_events"])
        m.send(admitted, m.Shutdown("test over"))
        running.join(timeout=10)
        admitted.close(linger=0)
        assert not running.is_alive()
        cortex.close()
        stop_authenticator(server_ctx)
        stop_authenticator(client_ctx)
        for c in (client_ctx, server_ctx):
            c.term()


def test_a_stored_session_recorded_without_keys_still_opens_and_replays(tmp_path):
    """Sessions recorded across machines before keys were required are read (report, NWB, replay), never run:
    their endpoints are not refused. Changing endpoints on such a rig is checked again."""
    data = load_rig(ROOT / "rigs" / "sim.toml").model_dump()
    data["endpoints"]["model"] = "tcp://*:5603"
    stored = parse_rig(data, "session.sqlite (stored rig)", stored=True)
    assert stored.endpoints.model == "tcp://*:5603"
    assert with_overrides(stored, session={"n_trials": 3}).session.n_trials == 3  # what replay does
    with pytest.raises(RigFileError, match=r"endpoints\.presenter_plans = 'tcp://10\.0\.0\.2:5601' is not on"):
        with_overrides(stored, endpoints={"presenter_plans": "tcp://10.0.0.2:5601"})
    with pytest.raises(RigFileError, match=r"not on loopback"):
        parse_rig(data, "rig.json")  # the same rig to be run: refused


def test_check_and_serve_name_a_missing_key_file_without_a_traceback(tmp_path, capsys):
    rig_text = (ROOT / "rigs" / "sim.toml").read_text() + (
        f'\n[security]\nserver_key = "{tmp_path}/none/rig-server.key_secret"\n'
        f'client_key = "{tmp_path}/none/this-machine.key_secret"\nauthorized_keys = "{tmp_path}/none/authorized"\n'
    )
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(rig_text)
    assert cli_main(["check", str(rig_file)]) == 2
    assert "security.server_key" in capsys.readouterr().err
    assert cli_main(["serve", "model", "--rig", str(rig_file), "--session-dir", str(tmp_path / "s")]) == 2
    assert "no such key file" in capsys.readouterr().err
