"""Seeds a running Roster server for the REST contract run, then holds two
live WebSocket sessions until killed, so that presence, sessions and locks
answer with data, not only empty lists.

    python seed.py BASE_URL ADMIN_TOKEN ALICE_TOKEN BOB_TOKEN

Prints "seeded" once everything is in place.
"""

import asyncio
import json
import sys
import urllib.request

import websockets

base, admin, alice, bob = sys.argv[1:5]


def rest(method, path, body=None):
    req = urllib.request.Request(
        f"{base}/api/v1{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def session(token, user, lock):
    ws = await websockets.connect(base.replace("http", "ws", 1) + "/ws")
    await ws.send(json.dumps({"type": "HELLO", "token": token, "device": "web", "os": "Linux",
                              "appVersion": "1.0.0", "clientId": f"contract-{user}"}))
    await ws.send(json.dumps({"type": "SUB", "room": "Order:1", "state": {"viewing": True}}))
    await ws.send(json.dumps({"type": "SUB", "room": "Chat:lobby"}))
    if lock:
        await ws.send(json.dumps({"type": "LOCK", "room": "Order:1", "field": "total"}))
    return ws


async def main():
    assert rest("POST", "/rooms", {"key": "Order:1", "type": "COLLABORATION", "tags": ["orders"],
                                   "attributes": {"customer": "ACME"}}) in (201, 409)
    assert rest("PUT", "/rooms/Order:1/participants/alice", {"role": "operator"}) == 204
    assert rest("POST", "/room-types", {"code": "KIOSK", "capacity": 5, "idleTtl": "10m"}) in (201, 409)
    assert rest("POST", "/lifecycle", {"type": "MUTATING", "entity": "Invoice", "id": 7,
                                       "userId": "etl"}) == 202
    sockets = [await session(alice, "alice", True), await session(bob, "bob", False)]
    # Let the WELCOME, PRESENCE and LOCK_ACK arrive; keep reading so the
    # server never sees a slow consumer, and answer pings (websockets does).
    print("seeded", flush=True)
    await asyncio.gather(*(drain(ws) for ws in sockets))


async def drain(ws):
    async for _ in ws:
        pass


asyncio.run(main())
