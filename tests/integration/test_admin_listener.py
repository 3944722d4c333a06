"""The admin listener in this process, on real loopback sockets: the reload contract
(prepare_reload reads the token again and binds a new address; commit swaps; abort undoes),
drain and stop, and the limits whose real values take seconds (request and idle timeouts,
connection count), shortened here through the module's constants."""

from __future__ import annotations

import asyncio
import os

import pytest

import edgeway.admin.server as admin_server
from edgeway.admin.server import AdminError, AdminService
from edgeway.config import load_config_text
from edgeway.config.model import AdminConfig
from edgeway.runtime import Runtime
from tests.support.admin import parse_response
from tests.support.tools import free_port


def write_token(path, token):
    path.write_text(token)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def setup(tmp_path):
    write_token(tmp_path / "token", "first-token-0123456789")
    config = load_config_text(f"admin: {{listen: '127.0.0.1:0', token_file: {tmp_path / 'token'}}}\n"
                              f"dns: {{listen: ['127.0.0.1:{free_port()}']}}\n", base_dir=tmp_path)
    return tmp_path, config


async def request(port, path="/api/v1/status", token="first-token-0123456789", method="GET", extra=b""):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n".encode()
                 + extra + b"\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return parse_response(data)


def port_of(service):
    return int(service.addresses[0].rsplit(":", 1)[1])


async def test_reload_reads_the_token_again_and_moves_the_address(setup):
    tmp_path, config = setup
    service = AdminService(Runtime(config), config.admin)
    await service.start()
    try:
        old_port = port_of(service)
        assert (await request(old_port))[0] == 200
        # a keep-alive connection opened before the reload: it is closed when the address moves
        reader, writer = await asyncio.open_connection("127.0.0.1", old_port)
        write_token(tmp_path / "token2", "second-token-0123456789")
        new_port = free_port()
        new = AdminConfig.model_validate({"listen": f"127.0.0.1:{new_port}", "token_file": str(tmp_path / "token2")})
        plan = await service.prepare_reload(new)
        # prepared, not committed: nothing a client sees has changed
        assert (await request(old_port))[0] == 200
        assert plan.changes == [f"admin: listening on 127.0.0.1:{new_port} instead of 127.0.0.1:0",
                                "admin: new token"]
        plan.commit()
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(reader.read(), 5) == b""       # the idle one: closed
        writer.close()
        assert (await request(new_port))[0] == 401
        assert (await request(new_port, token="second-token-0123456789"))[0] == 200
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", old_port)
    finally:
        await service.stop()


async def test_a_failed_prepare_changes_nothing_and_abort_closes_the_new_socket(setup):
    tmp_path, config = setup
    service = AdminService(Runtime(config), config.admin)
    await service.start()
    try:
        port = port_of(service)
        write_token(tmp_path / "empty", "")
        with pytest.raises(AdminError, match="admin.token_file: the token file .* is empty"):
            await service.prepare_reload(AdminConfig.model_construct(listen=config.admin.listen,
                                                                     token_file=tmp_path / "empty"))
        busy = free_port()
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", busy)
        try:
            with pytest.raises(AdminError, match=f"admin.listen 127.0.0.1:{busy}: cannot listen"):
                await service.prepare_reload(AdminConfig.model_validate(
                    {"listen": f"127.0.0.1:{busy}", "token_file": str(tmp_path / "token")}))
        finally:
            blocker.close()
        other = free_port()
        plan = await service.prepare_reload(AdminConfig.model_validate(
            {"listen": f"127.0.0.1:{other}", "token_file": str(tmp_path / "token")}))
        plan.abort()
        assert (await request(port))[0] == 200
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", other)
    finally:
        await service.stop()


async def test_request_and_idle_timeouts(setup, monkeypatch):
    _, config = setup
    # the last dribbled byte leaves 0.3s before the deadline: one sent as the 408 goes out
    # and the connection closes gets the client an RST instead of the answer (a loaded host)
    monkeypatch.setattr(admin_server, "REQUEST_TIMEOUT", 0.6)
    monkeypatch.setattr(admin_server, "IDLE_TIMEOUT", 0.3)
    service = AdminService(Runtime(config), config.admin)
    await service.start()
    try:
        port = port_of(service)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/status HTTP/1.1\r\n")
        # a byte now and then does not extend the deadline: it runs from the first byte
        for _ in range(3):
            await asyncio.sleep(0.1)
            writer.write(b"X: y\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        assert parse_response(data)[0] == 408
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""       # idle: closed, no answer
        writer.close()
    finally:
        await service.stop()


async def test_connections_beyond_the_limit_get_503(setup, monkeypatch):
    _, config = setup
    monkeypatch.setattr(admin_server, "MAX_CONNECTIONS", 2)
    service = AdminService(Runtime(config), config.admin)
    await service.start()
    try:
        port = port_of(service)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert parse_response(await asyncio.wait_for(reader.read(), 5))[0] == 503
        for _, w in held:
            w.close()
        await asyncio.sleep(0.05)
        assert (await request(port))[0] == 200
    finally:
        await service.stop()


async def test_drain_closes_the_socket_and_connections_not_being_answered(setup):
    _, config = setup
    service = AdminService(Runtime(config), config.admin)
    await service.start()
    port = port_of(service)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    slow_writer.write(b"GET /api/v1/status HTTP/1.1\r\n")     # a request that never completes
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await service.drain(loop.time() + 0.5)
    assert loop.time() - start < 2
    assert await asyncio.wait_for(reader.read(), 5) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await service.stop()
    assert await asyncio.wait_for(slow_reader.read(), 5) == b""
    writer.close()
    slow_writer.close()
