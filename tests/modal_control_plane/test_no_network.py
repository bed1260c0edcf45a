"""The control plane and the client it serves never leave the loopback interface."""

import io
import socket

import modal

from . import sample_app

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_a_full_session_only_touches_loopback(modal_control_plane, monkeypatch):
    """Deploy, call a function and move volume files while recording every name lookup and every
    outgoing connection of this process (the control plane's own sockets included)."""
    cp = modal_control_plane
    resolved, connected = [], []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def recording_getaddrinfo(host, *args, **kwargs):
        resolved.append(host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    def recording_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            connected.append(address[0])
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", recording_connect)

    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    sample_app.app.deploy(name="sample")
    cp.script_function("write_marker", result="ok")
    assert modal.Function.from_name("sample", "write_marker").remote("a", "b") == "ok"
    volume = modal.Volume.from_name(sample_app.VOLUME_NAME)
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"x" * (9 * 1024 * 1024)), "big.bin")
    assert len(b"".join(volume.read_file("big.bin"))) == 9 * 1024 * 1024

    assert connected, "the recording hooks saw no connection at all"
    assert set(resolved) <= LOOPBACK
    assert set(connected) <= LOOPBACK
