#!/usr/bin/env python3
"""An example marketd client in Python: keeps a verified order book of one symbol.

It subscribes to the book channel over WebSocket, applies the snapshot and
every update, and checks that each update's prev_seq is the seq it holds (else
it missed something) and that the CRC-32 checksum of its book equals the
server's after every message (protocol.md section 3). On a gap or a mismatch it
drops the book and subscribes again; when the connection drops it reconnects
and resumes from the last seq it holds. It prints the top of the book after
every verified message, and a summary line when it stops:

    summary verified=200 snapshots=1 mismatches=0 gaps=0 resyncs=0 reconnects=0 resumed_exact=0 resumed_snapshot=0

Usage (Debian: apt-get install python3-websockets):

    python3 docs/examples/python/client.py --url ws://localhost:8080/v1/ws --symbol BTC-USD --updates 200

Prices and sizes stay the exact strings received (the checksum covers those);
levels are ordered by decimal.Decimal, never by float.
"""

import argparse
import asyncio
import bisect
import json
import sys
import zlib
from decimal import Decimal, InvalidOperation

import websockets

DEFAULT_URL = "ws://localhost:8080/v1/ws"
DEFAULT_SYMBOL = "BTC-USD"
DEFAULT_DEPTH = 10

CHECKSUM_LEVELS = 10  # levels per side that the checksum covers
READ_LIMIT = 16 << 20  # bytes in one message: a full-depth snapshot can be large
MIN_BACKOFF = 0.25  # seconds before the first reconnect; doubles after each failure
MAX_BACKOFF = 5.0


class Side:
    """The levels of one side, best first, as the strings received.

    keys holds the sort key of each level (the price as a Decimal, negated for
    bids so that the best price always comes first) to find levels by bisection.
    """

    def __init__(self, desc):
        self.desc = desc
        self.keys = []  # sort keys, ascending
        self.levels = []  # [price, size] strings, in the order of keys

    def set(self, price, size):
        """Applies one [price, size] pair; size "0" removes the level."""
        try:
            p, sz = Decimal(price), Decimal(size)
        except InvalidOperation:
            raise ValueError(f"bad level [{price!r}, {size!r}]") from None
        key = -p if self.desc else p
        i = bisect.bisect_left(self.keys, key)
        found = i < len(self.keys) and self.keys[i] == key
        if sz == 0:
            if found:
                del self.keys[i]
                del self.levels[i]
        elif found:
            self.levels[i] = [price, size]
        else:
            self.keys.insert(i, key)
            self.levels.insert(i, [price, size])

    def best(self):
        return self.levels[0] if self.levels else None


class Book:
    """The client's copy of one book view."""

    def __init__(self):
        self.bids = Side(desc=True)
        self.asks = Side(desc=False)

    def apply(self, bids, asks):
        for price, size in bids:
            self.bids.set(price, size)
        for price, size in asks:
            self.asks.set(price, size)

    def checksum(self):
        """CRC-32 of "bidPrice:bidSize:askPrice:askSize:..." over the first 10
        levels of each side (bid i, then ask i), without the final ':'."""
        parts = []
        for i in range(CHECKSUM_LEVELS):
            for side in (self.bids, self.asks):
                if i < len(side.levels):
                    parts.extend(side.levels[i])
        return zlib.crc32(":".join(parts).encode())


class Refused(Exception):
    """The server refused the subscription: reconnecting cannot cure it."""


class Done(Exception):
    """The wanted number of updates is verified."""


class Client:
    """Keeps the verified book of one symbol; runs on one asyncio task."""

    def __init__(self, args):
        self.args = args
        self.book = Book()
        self.synced = False  # the book holds a snapshot and every update since
        self.last_seq = 0  # seq of the last message applied
        self.next_id = 0
        self.sub_id = None  # id of the last subscribe sent
        self.pending = False  # that subscribe has no ack yet
        self.damaged = False  # --corrupt-after has been done
        self.stats = dict(verified=0, snapshots=0, mismatches=0, gaps=0, resyncs=0,
                          reconnects=0, resumed_exact=0, resumed_snapshot=0)

    def summary(self):
        return "summary " + " ".join(f"{k}={v}" for k, v in self.stats.items())

    async def run(self):
        """Connects, and reconnects after the connection drops, until the
        wanted updates are verified. A first connection that fails raises."""
        backoff = MIN_BACKOFF
        attempt = 0
        while True:
            if attempt > 0:
                self.stats["reconnects"] += 1
            connected = False
            try:
                async with websockets.connect(self.args.url, max_size=READ_LIMIT) as ws:
                    connected = True
                    backoff = MIN_BACKOFF
                    await self.session(ws)
            except Done:
                return
            except Refused:
                raise
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
                if attempt == 0 and not connected:
                    raise
                log(f"connection lost: {e!r}; reconnecting in {backoff}s")
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF)
            attempt += 1

    async def session(self, ws):
        resume = {self.args.symbol: self.last_seq} if self.synced else None
        await self.subscribe(ws, resume)
        async for frame in ws:
            if not isinstance(frame, str):
                continue
            # A frame holds one message or several separated by '\n'.
            for line in frame.split("\n"):
                if line:
                    await self.handle(ws, json.loads(line))
        raise ConnectionError("the server closed the connection")

    async def subscribe(self, ws, resume=None):
        self.next_id += 1
        self.sub_id = self.next_id
        self.pending = True
        req = {"op": "subscribe", "id": self.next_id, "channel": "book",
               "symbols": [self.args.symbol], "depth": self.args.depth, "interval": "raw"}
        if resume:
            req["resume"] = resume
        await ws.send(json.dumps(req))

    async def resync(self, ws, why):
        """Drops the book and subscribes again: the server answers with a fresh
        snapshot. Updates still in flight from the old subscription come before
        it and are ignored while the client is not synced."""
        log(f"resync {self.args.symbol}: {why}")
        self.stats["resyncs"] += 1
        self.synced = False
        self.book = Book()
        await self.subscribe(ws)

    async def apply_checked(self, ws, m):
        """Applies the levels of a snapshot or an update and checks the book's
        checksum against the message's; on a failure it resyncs and returns
        False."""
        try:
            self.book.apply(m["bids"], m["asks"])
        except ValueError as e:
            await self.resync(ws, str(e))
            return False
        self.last_seq = m["seq"]
        got = self.book.checksum()
        if got != m["checksum"]:
            self.stats["mismatches"] += 1
            await self.resync(ws, f"{m['type']} seq {m['seq']}: checksum {got}, server says {m['checksum']}")
            return False
        return True

    async def handle(self, ws, m):
        typ = m.get("type")
        sym = self.args.symbol
        if typ == "snapshot":
            # One with an id answers a snapshot op (not sent here).
            if m.get("symbol") != sym or "id" in m:
                return
            self.stats["snapshots"] += 1
            self.book = Book()
            if not await self.apply_checked(ws, m):
                return
            self.synced = True
            self.print_top("snapshot")
        elif typ == "update":
            if m.get("symbol") != sym or not self.synced:
                return  # not ours, or from a subscription being replaced
            if m["prev_seq"] != self.last_seq:
                self.stats["gaps"] += 1
                return await self.resync(ws, f"gap: update prev_seq {m['prev_seq']}, held seq {self.last_seq}")
            if not await self.apply_checked(ws, m):
                return
            self.stats["verified"] += 1
            self.print_top("update")
            if self.done():
                await ws.close()
                raise Done()
            if self.args.corrupt_after and not self.damaged and self.stats["verified"] >= self.args.corrupt_after:
                self.damaged = True
                self.corrupt()
        elif typ == "ack":
            if m.get("id") != self.sub_id:
                return
            self.pending = False
            for s, how in (m.get("resumed") or {}).items():
                log(f"resumed {s}: {how}")
                self.stats["resumed_exact" if how == "exact" else "resumed_snapshot"] += 1
            if self.done():
                await ws.close()
                raise Done()
        elif typ == "error":
            if m.get("id") == self.sub_id:
                raise Refused(f"subscribe refused: {m.get('code')}: {m.get('message')}")
            log(f"server error {m.get('code')}: {m.get('message')}")
        elif typ == "notice":
            log(f"notice {m.get('code')}: {m.get('message')}")
        # Other types (ticker, trade, pong, and any added later) are not ours.

    def done(self):
        """Reports whether the wanted updates are verified. It waits for the
        ack of the last subscribe too, so that the summary says how the last
        (re)subscription started: the server sends a resumed stream's missed
        updates before the ack."""
        return bool(self.args.updates) and self.stats["verified"] >= self.args.updates and not self.pending

    def corrupt(self):
        """Adds a bid 10^-8 above the best bid: a price the server never sends,
        so the next checksum cannot match and the client must resync."""
        best = self.book.bids.best()
        price = (Decimal(best[0]) if best else Decimal(0)) + Decimal("0.00000001")
        log(f"corrupting the local book: bid {price} x 1")
        self.book.bids.set(str(price), "1")

    def print_top(self, what):
        def top(side):
            best = side.best()
            return f"{best[0]} x {best[1]}" if best else "-"
        print(f"{self.args.symbol} {what} seq={self.last_seq} bid {top(self.book.bids)} | "
              f"ask {top(self.book.asks)} | verified={self.stats['verified']}", flush=True)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description="Keep a verified marketd order book.")
    ap.add_argument("--url", default=DEFAULT_URL, help="marketd WebSocket URL")
    ap.add_argument("--symbol", default=DEFAULT_SYMBOL, help="symbol whose book to keep")
    ap.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                    help="book depth (1, 10, 25, 50, 100, 500, 1000, or 0 for all)")
    ap.add_argument("--updates", type=int, default=0,
                    help="stop after N verified updates (0: run until interrupted)")
    ap.add_argument("--corrupt-after", type=int, default=0,
                    help="after K verified updates, corrupt the local book once, to show the resync")
    args = ap.parse_args()
    client = Client(args)
    status = 0
    try:
        asyncio.run(client.run())
    except KeyboardInterrupt:
        pass
    except (Refused, OSError, websockets.exceptions.WebSocketException) as e:
        log(f"client.py: {e}")
        status = 1
    print(client.summary(), flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
