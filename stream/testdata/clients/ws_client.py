"""ws_client.py drives one marketd connection with the Python websockets
library (Debian's python3-websockets, run on /usr/bin/python3) for stream's
TestDeflateClients:

    /usr/bin/python3 ws_client.py URL CONFIG_JSON

CONFIG_JSON picks the compression: {"compression": null} (none),
{"compression": "deflate"} (the library's default offer), or
{"factory": {...}}: a ClientPerMessageDeflateFactory with these keyword
arguments. The session is the one every client of the test runs (see
clients_test.go):
  - subscribe to book depth 10 of LVL-USD and ORD-USD, trades of LVL-USD and
    ticker "*", and ask for a full LVL-USD snapshot (op id 4); print
    {"ready":true} once the three acks and that snapshot arrived;
  - decode every message, split it on '\\n', parse the JSON, check each
    stream's prev_seq chain (ticker: seq increasing), and ask for another
    full snapshot every 50 data messages;
  - on a line "sync N" on stdin send {"op":"ping","id":N} and print
    {"synced":N} at its pong; on "end" the same with id 99, and once its pong
    and every snapshot asked for arrived, close and print one JSON summary
    line (exit status 1 when something went wrong).

websockets exposes neither the frames it reads nor the bytes on the wire;
compressed frames are counted where they are decompressed instead:
PerMessageDeflate.decode sees every data frame of a connection that
negotiated the extension, RSV1 as received, and is wrapped here to count
them. Without the extension each message is one frame (the server never
fragments), counted as it arrives.
"""

import asyncio
import json
import sys
import threading

import websockets
from websockets.extensions import permessage_deflate
from websockets.frames import Opcode

END_ID = 99
SNAPSHOT_EVERY = 50

summary = {
    "offer": "",
    "answer": "",
    "frames": 0,  # data frames
    "compressed": 0,  # of which with RSV1 set
    "messages": 0,  # JSON messages after splitting frames
    "counts": {},  # data messages per channel:symbol
    "last": {},  # last seq per channel:symbol
    "snapshots": 0,  # book subscription snapshots
    "op_snapshots": 0,  # replies to snapshot ops
    "error": "",
}
deflated = {"frames": 0}  # data frames through the extension


def fail(msg):
    if not summary["error"]:
        summary["error"] = msg


_decode = permessage_deflate.PerMessageDeflate.decode


def counting_decode(self, frame, *, max_size=None):
    if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
        deflated["frames"] += 1
        if frame.rsv1:
            summary["compressed"] += 1
    return _decode(self, frame, max_size=max_size)


permessage_deflate.PerMessageDeflate.decode = counting_decode


def header(headers, name):
    return headers.get(name, "") if headers is not None else ""


async def session(url, config):
    kwargs = {"max_size": 64 << 20, "open_timeout": 5}
    if "factory" in config:
        kwargs["extensions"] = [permessage_deflate.ClientPerMessageDeflateFactory(**config["factory"])]
    else:
        kwargs["compression"] = config["compression"]
    loop = asyncio.get_running_loop()
    commands = asyncio.Queue()

    def read_stdin():
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.split())

    threading.Thread(target=read_stdin, daemon=True).start()

    async with websockets.connect(url, **kwargs) as ws:
        # websockets 10 (legacy protocol) and 11+ keep the handshake in
        # different places.
        request = getattr(ws, "request_headers", None)
        response = getattr(ws, "response_headers", None)
        if request is None and getattr(ws, "request", None) is not None:
            request, response = ws.request.headers, ws.response.headers
        summary["offer"] = header(request, "Sec-WebSocket-Extensions")
        summary["answer"] = header(response, "Sec-WebSocket-Extensions")

        pending = set()  # ids of snapshot ops not yet answered

        async def send(msg):
            await ws.send(json.dumps(msg))

        async def ask_snapshot(op_id):
            pending.add(op_id)
            await send({"op": "snapshot", "id": op_id, "symbol": "LVL-USD", "depth": 0})

        async def obey():
            while True:
                words = await commands.get()
                if words[:1] == ["sync"]:
                    await send({"op": "ping", "id": int(words[1])})
                elif words[:1] == ["end"]:
                    await send({"op": "ping", "id": END_ID})

        await send({"op": "subscribe", "id": 1, "channel": "book", "symbols": ["LVL-USD", "ORD-USD"], "depth": 10})
        await send({"op": "subscribe", "id": 2, "channel": "trades", "symbols": ["LVL-USD"]})
        await send({"op": "subscribe", "id": 3, "channel": "ticker", "symbols": ["*"]})
        await ask_snapshot(4)
        obeying = asyncio.create_task(obey())
        acks, ready, data, ended = set(), False, 0, False
        last, counts = summary["last"], summary["counts"]
        try:
            while not (ended and not pending):
                payload = await ws.recv()
                summary["frames"] += 1
                if not isinstance(payload, str):
                    fail("binary message")
                    payload = payload.decode("utf-8", "replace")
                for line in payload.split("\n"):
                    try:
                        m = json.loads(line)
                    except ValueError as err:
                        fail(f"bad JSON {line[:80]!r}: {err}")
                        continue
                    summary["messages"] += 1
                    typ = m.get("type")
                    key = f"{m.get('channel')}:{m.get('symbol')}"
                    seq, prev = m.get("seq"), m.get("prev_seq")
                    if typ == "ack":
                        acks.add(m.get("id"))
                    elif typ == "snapshot":
                        if not isinstance(m.get("bids"), list) or not isinstance(m.get("asks"), list) or not isinstance(seq, int):
                            fail(f"bad snapshot {line[:80]}")
                        elif "id" in m:
                            summary["op_snapshots"] += 1
                            pending.discard(m["id"])
                        else:
                            summary["snapshots"] += 1
                            last[key] = seq
                    elif typ in ("update", "trade"):
                        if typ == "update" and key not in last:
                            fail(f"{key}: update before snapshot")
                        elif not isinstance(prev, int):
                            fail(f"{key}: no prev_seq: {line[:80]}")
                        elif key in last and prev != last[key]:
                            fail(f"{key}: prev_seq {prev} after seq {last[key]}")
                    elif typ == "ticker":
                        if key in last and not seq > last[key]:
                            fail(f"{key}: seq {seq} after {last[key]}")
                    elif typ == "pong":
                        if m.get("id") == END_ID:
                            ended = True
                        else:
                            print(json.dumps({"synced": m.get("id")}, separators=(",", ":")), flush=True)
                    else:
                        fail(f"unexpected message {line[:120]}")
                    if typ in ("update", "trade", "ticker"):
                        last[key] = seq
                        counts[key] = counts.get(key, 0) + 1
                        data += 1
                        if data % SNAPSHOT_EVERY == 0:
                            await ask_snapshot(1000 + data // SNAPSHOT_EVERY)
                if not ready and {1, 2, 3} <= acks and summary["op_snapshots"] == 1:
                    ready = True
                    print('{"ready":true}', flush=True)
        finally:
            obeying.cancel()
    # The library reads ahead: frames that arrive after the last one
    # received also went through the extension.
    if deflated["frames"] and deflated["frames"] < summary["frames"]:
        fail(f"{summary['frames']} messages but {deflated['frames']} frames through the extension")


def main():
    if len(sys.argv) != 3:
        print("usage: ws_client.py URL CONFIG_JSON", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(session(sys.argv[1], json.loads(sys.argv[2])))
    except Exception as err:  # report whatever ended the session
        fail(f"{type(err).__name__}: {err}")
    print(json.dumps(summary), flush=True)
    sys.exit(1 if summary["error"] else 0)


if __name__ == "__main__":
    main()
