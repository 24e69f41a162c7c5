#!/usr/bin/env python3
"""Blocking list commands, side by side: the same scenarios against two servers.

Usage: blocking_side_by_side.py REDIS_PORT MINIKV_PORT

Each scenario runs against both servers (real redis-server 7.0 first, minikv second)
and records what a client can observe: replies, which client got which element, what
is left in the lists, and whether a call returned within the time it should. Exact
timings are not compared (Redis checks timeouts 10 times a second, minikv to the
millisecond); only whether they fall in the expected window.

The scenarios: FIFO service of clients blocked on one key, a push of N elements
serving up to N waiters, the pusher's reply (the length before waiters pop), timeouts,
BLMOVE/BRPOPLPUSH waiting then served (and chained into a BLPOP on the destination),
a client blocked on several keys served once, BLPOP inside MULTI/EXEC answering at
once, a blocked client that disconnects leaving no waiter behind, a timed-out waiter
leaving no waiter behind, databases kept apart, RESP3 replies, and the counted pops
BLMPOP and BZMPOP: waiters served oldest first, each taking up to its COUNT (all that
is there when there is less), next to BLPOP/BZPOPMIN waiters on the same key, their
timeouts, and their answer inside MULTI/EXEC.

Exits 1 when the two servers differ in any observation (or a scenario fails to run),
0 otherwise. Needs redis-py. Every scenario flushes the server first: do not point it
at a server holding data you want.
"""

import socket
import sys
import threading
import time

import redis

# How long a scenario waits for a client to show up as blocked, or for a blocked call
# to return, before it calls the server stuck.
PATIENCE = 5.0


def client(port, protocol=2, db=0):
    return redis.Redis(port=port, protocol=protocol, db=db, socket_timeout=PATIENCE + 5)


def blocked_clients(r):
    return int(r.info("clients")["blocked_clients"])


def wait_blocked(r, n):
    """Waits until the server reports `n` blocked clients; returns whether it did."""
    deadline = time.time() + PATIENCE
    while time.time() < deadline:
        if blocked_clients(r) == n:
            return True
        time.sleep(0.01)
    return False


class Call:
    """A command run on its own connection, in a thread, so the test can go on while
    it blocks. `result()` waits for it and returns its reply (or the error text)."""

    def __init__(self, port, *args, protocol=2, db=0):
        self.conn = client(port, protocol, db)
        self.reply = None
        self.started = time.time()
        self.elapsed = None
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)
        self.thread.start()

    def _run(self, *args):
        try:
            self.reply = norm(self.conn.execute_command(*args))
        except redis.ResponseError as e:
            self.reply = "ERR: %s" % e
        except Exception as e:  # a stuck server shows up here as a socket timeout
            self.reply = "EXC: %s" % type(e).__name__
        self.elapsed = time.time() - self.started

    def done(self):
        return not self.thread.is_alive()

    def result(self):
        self.thread.join(PATIENCE)
        return "STILL BLOCKED" if self.thread.is_alive() else self.reply


def norm(v):
    """Replies as plain comparable values (bytes to str, tuples to lists)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    return v


def lists(r, *keys):
    return {k: norm(r.lrange(k, 0, -1)) for k in keys}


# ----- scenarios: each takes a port and returns a dict of observations -----


def fifo_one_key(port):
    r = client(port)
    r.flushall()
    first = Call(port, "BLPOP", "q", "0")
    ok1 = wait_blocked(r, 1)
    second = Call(port, "BLPOP", "q", "0")
    ok2 = wait_blocked(r, 2)
    push1 = r.lpush("q", "a")  # the length right after the push: 1
    got_first = first.result()
    still_waiting = not second.done()
    push2 = r.rpush("q", "b", "c")
    got_second = second.result()
    return {
        "both blocked": ok1 and ok2,
        "pusher reply (1 element)": push1,
        "older waiter": got_first,
        "newer waiter still blocked after 1 element": still_waiting,
        "pusher reply (2 elements)": push2,
        "newer waiter": got_second,
        "left": lists(r, "q"),
        "blocked at end": blocked_clients(r),
    }


def one_push_serves_n(port):
    r = client(port)
    r.flushall()
    calls = []
    for i in range(3):
        calls.append(Call(port, "BRPOP", "q", "0"))
        wait_blocked(r, i + 1)
    push = r.rpush("q", "x", "y")  # two elements, three waiters: two are served
    served = [calls[0].result(), calls[1].result()]
    third_waits = not calls[2].done()
    r.lpush("q", "z")
    return {
        "pusher reply": push,
        "served in order": served,
        "third still blocked": third_waits,
        "third": calls[2].result(),
        "left": lists(r, "q"),
        "blocked at end": blocked_clients(r),
    }


def lpush_many_to_waiter(port):
    r = client(port)
    r.flushall()
    w = Call(port, "BLPOP", "q", "0")
    wait_blocked(r, 1)
    push = r.lpush("q", "a", "b", "c")
    return {"pusher reply": push, "waiter": w.result(), "left": lists(r, "q")}


def timeout(port):
    r = client(port)
    r.flushall()
    w = Call(port, "BLPOP", "nokey", "0.2")
    reply = w.result()
    in_window = w.elapsed is not None and 0.15 <= w.elapsed <= 1.5
    after = blocked_clients(r)
    pushed = r.rpush("nokey", "kept")  # nobody waits any more: the element stays
    w2 = Call(port, "BLMOVE", "src", "dst", "LEFT", "RIGHT", "0.2")
    reply2 = w2.result()
    in_window2 = w2.elapsed is not None and 0.15 <= w2.elapsed <= 1.5
    w3 = Call(port, "BRPOPLPUSH", "src", "dst", "0.1")
    reply3 = w3.result()
    return {
        "BLPOP reply": reply,
        "BLPOP returned after ~0.2 s": in_window,
        "blocked after timeout": after,
        "push after timeout": pushed,
        "left": lists(r, "nokey"),
        "BLMOVE reply": reply2,
        "BLMOVE returned after ~0.2 s": in_window2,
        "BRPOPLPUSH reply": reply3,
    }


def blmove_waits(port):
    r = client(port)
    r.flushall()
    w = Call(port, "BLMOVE", "src", "dst", "RIGHT", "LEFT", "0")
    ok = wait_blocked(r, 1)
    push = r.rpush("src", "a", "b")
    got = w.result()
    w2 = Call(port, "BRPOPLPUSH", "empty", "dst", "0")
    wait_blocked(r, 1)
    push2 = r.lpush("empty", "c")
    got2 = w2.result()
    # A rotation on one list while blocked.
    w3 = Call(port, "BLMOVE", "ring", "ring", "LEFT", "RIGHT", "0")
    wait_blocked(r, 1)
    r.rpush("ring", "r1")
    got3 = w3.result()
    return {
        "blocked": ok,
        "pusher reply": push,
        "BLMOVE got": got,
        "BRPOPLPUSH pusher reply": push2,
        "BRPOPLPUSH got": got2,
        "rotation got": got3,
        "left": lists(r, "src", "dst", "empty", "ring"),
        "blocked at end": blocked_clients(r),
    }


def blmove_chain(port):
    """A BLMOVE served by a push makes its destination ready for a BLPOP on it."""
    r = client(port)
    r.flushall()
    mover = Call(port, "BLMOVE", "a", "b", "LEFT", "LEFT", "0")
    wait_blocked(r, 1)
    popper = Call(port, "BLPOP", "b", "0")
    wait_blocked(r, 2)
    push = r.rpush("a", "x")
    return {
        "pusher reply": push,
        "mover": mover.result(),
        "popper": popper.result(),
        "left": lists(r, "a", "b"),
        "blocked at end": blocked_clients(r),
    }


def blmove_wrong_type_destination(port):
    """Redis 7.0 unblocks a BLMOVE whose destination turned out to hold another type
    with a WRONGTYPE error, puts the element back, and goes on with the next waiter."""
    r = client(port)
    r.flushall()
    r.set("str", "v")
    w = Call(port, "BLMOVE", "src", "str", "LEFT", "LEFT", "0.5")
    wait_blocked(r, 1)
    push = r.rpush("src", "a")
    got = w.result()
    left = lists(r, "src")
    r.delete("src")
    w1 = Call(port, "BRPOPLPUSH", "src", "str", "0.5")
    wait_blocked(r, 1)
    w2 = Call(port, "BLPOP", "src", "0.5")
    wait_blocked(r, 2)
    push2 = r.rpush("src", "b")
    return {
        "pusher reply": push,
        "waiter": got,
        "left": left,
        "str": norm(r.get("str")),
        "second pusher reply": push2,
        "BRPOPLPUSH to a string": w1.result(),
        "BLPOP behind it": w2.result(),
        "left at end": lists(r, "src"),
    }


def several_keys_served_once(port):
    r = client(port)
    r.flushall()
    w = Call(port, "BLPOP", "k1", "k2", "k3", "0")
    wait_blocked(r, 1)
    # Both keys become ready in one transaction; the waiter takes from the first
    # key made ready and only once.
    p = r.pipeline(transaction=True)
    p.rpush("k2", "x")
    p.rpush("k3", "y")
    replies = p.execute()
    got = w.result()
    w2 = Call(port, "BRPOP", "k4", "k5", "0")
    wait_blocked(r, 1)
    r.rpush("k5", "first")
    got2 = w2.result()
    r.rpush("k4", "second")
    return {
        "exec replies": replies,
        "waiter": got,
        "second waiter": got2,
        "left": lists(r, "k1", "k2", "k3", "k4", "k5"),
        "blocked at end": blocked_clients(r),
    }


def multi_does_not_block(port):
    r = client(port)
    r.flushall()
    start = time.time()
    p = r.pipeline(transaction=True)
    p.blpop(["empty1", "empty2"], 0)
    p.brpop(["empty1"], 0)
    p.execute_command("BLMOVE", "empty1", "d", "LEFT", "LEFT", "0")
    p.execute_command("BRPOPLPUSH", "empty1", "d", "0")
    p.rpush("full", "v")
    p.blpop(["empty1", "full"], 0)
    replies = [norm(x) for x in p.execute()]
    return {
        "replies": replies,
        "answered at once": time.time() - start < 1.0,
        "blocked": blocked_clients(r),
    }


def disconnect_leaves_no_waiter(port):
    r = client(port)
    r.flushall()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"*3\r\n$5\r\nBLPOP\r\n$2\r\ndq\r\n$1\r\n0\r\n")
    blocked = wait_blocked(r, 1)
    s.close()
    gone = wait_blocked(r, 0)
    push = r.rpush("dq", "v")
    time.sleep(0.1)
    # A second waiter after the one that left is the one served.
    w = Call(port, "BLPOP", "dq2", "0")
    s2 = socket.create_connection(("127.0.0.1", port))
    wait_blocked(r, 1)
    s2.sendall(b"*3\r\n$5\r\nBLPOP\r\n$3\r\ndq2\r\n$1\r\n0\r\n")
    wait_blocked(r, 2)
    w2 = Call(port, "BLPOP", "dq2", "0")
    wait_blocked(r, 3)
    s2.close()
    wait_blocked(r, 2)
    r.rpush("dq2", "e1", "e2")
    return {
        "blocked": blocked,
        "unblocked by disconnect": gone,
        "push after disconnect": push,
        "left": lists(r, "dq", "dq2"),
        "first waiter": w.result(),
        "third waiter (second left)": w2.result(),
        "blocked at end": blocked_clients(r),
    }


def databases_apart(port):
    r = client(port)
    r.flushall()
    w = Call(port, "BLPOP", "q", "0", db=1)
    wait_blocked(r, 1)
    r.rpush("q", "db0")  # database 0: the waiter in database 1 does not see it
    time.sleep(0.2)
    waiting = not w.done()
    client(port, db=1).rpush("q", "db1")
    return {"still waiting after a push in db 0": waiting, "waiter": w.result(), "db0 left": lists(r, "q")}


def resp3(port):
    r = client(port)
    r.flushall()
    w = Call(port, "BLPOP", "q", "0", protocol=3)
    wait_blocked(r, 1)
    r.rpush("q", "v")
    t = Call(port, "BRPOP", "nothing", "0.1", protocol=3)
    return {"served": w.result(), "timeout": t.result()}


def wrong_type_and_bad_timeout(port):
    r = client(port)
    r.flushall()
    r.set("s", "v")
    out = {}
    for args in (
        ["BLPOP", "missing", "s", "0"],
        ["BLPOP", "s", "x"],
        ["BLPOP", "missing", "-1"],
        ["BLPOP", "missing", "inf"],
        ["BLPOP", "missing", "nan"],
        ["BLMOVE", "s", "d", "LEFT", "LEFT", "0"],
        ["BLMOVE", "missing", "d", "UP", "LEFT", "0"],
        ["BRPOPLPUSH", "s", "d", "0"],
        ["BRPOPLPUSH", "missing", "d", "-0.5"],
    ):
        try:
            out[" ".join(args)] = norm(r.execute_command(*args))
        except redis.ResponseError as e:
            out[" ".join(args)] = "ERR: %s" % e
    return out


def blmpop_fifo_and_count(port):
    """BLMPOP waiters on one key are served oldest first, each popping up to its
    COUNT; a waiter asking for more than is left takes what is there."""
    r = client(port)
    r.flushall()
    first = Call(port, "BLMPOP", "0", "2", "k1", "k2", "LEFT", "COUNT", "2")
    ok1 = wait_blocked(r, 1)
    plain = Call(port, "BRPOP", "k2", "0")
    ok2 = wait_blocked(r, 2)
    greedy = Call(port, "BLMPOP", "0", "1", "k2", "RIGHT", "COUNT", "10")
    ok3 = wait_blocked(r, 3)
    push = r.rpush("k2", "a", "b", "c", "d")
    served = [first.result(), plain.result(), greedy.result()]
    # Fewer elements than waiters: the newer waiter stays blocked.
    w1 = Call(port, "BLMPOP", "0", "1", "k3", "LEFT", "COUNT", "3")
    wait_blocked(r, 1)
    w2 = Call(port, "BLMPOP", "0", "1", "k3", "LEFT")
    wait_blocked(r, 2)
    push2 = r.lpush("k3", "x", "y")
    got1 = w1.result()
    w2_waits = not w2.done()
    r.rpush("k3", "z")
    return {
        "all blocked": ok1 and ok2 and ok3,
        "pusher reply": push,
        "served oldest first": served,
        "second pusher reply": push2,
        "count > available": got1,
        "newer waiter still blocked": w2_waits,
        "newer waiter": w2.result(),
        "left": lists(r, "k1", "k2", "k3"),
        "blocked at end": blocked_clients(r),
    }


def bzmpop_fifo_and_count(port):
    """BZMPOP waiters on a sorted set, mixed with a BZPOPMIN one, served oldest first,
    each taking up to its COUNT from its end; RESP3 replies too."""
    r = client(port)
    r.flushall()
    first = Call(port, "BZMPOP", "0", "2", "nothing", "z", "MIN", "COUNT", "2")
    wait_blocked(r, 1)
    plain = Call(port, "BZPOPMIN", "z", "0")
    wait_blocked(r, 2)
    greedy = Call(port, "BZMPOP", "0", "1", "z", "MAX", "COUNT", "10", protocol=3)
    ok = wait_blocked(r, 3)
    added = r.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4.5})
    served = [first.result(), plain.result(), greedy.result()]
    w = Call(port, "BZMPOP", "0", "1", "z2", "MAX", "COUNT", "5")
    wait_blocked(r, 1)
    added2 = r.zadd("z2", {"m": 1})
    return {
        "all blocked": ok,
        "zadd reply": added,
        "served oldest first": served,
        "second zadd reply": added2,
        "count > available": w.result(),
        "z left": norm(r.zrange("z", 0, -1, withscores=True)),
        "z2 exists": r.exists("z2"),
        "blocked at end": blocked_clients(r),
    }


def mpop_timeouts(port):
    """BLMPOP and BZMPOP time out with a null reply, leave no waiter behind, and answer
    at once inside MULTI/EXEC."""
    r = client(port)
    r.flushall()
    w = Call(port, "BLMPOP", "0.2", "2", "n1", "n2", "LEFT", "COUNT", "2")
    reply = w.result()
    in_window = w.elapsed is not None and 0.15 <= w.elapsed <= 1.5
    zw = Call(port, "BZMPOP", "0.2", "1", "n3", "MIN", protocol=3)
    zreply = zw.result()
    z_in_window = zw.elapsed is not None and 0.15 <= zw.elapsed <= 1.5
    after = blocked_clients(r)
    pushed = r.rpush("n1", "kept")
    start = time.time()
    p = r.pipeline(transaction=True)
    p.execute_command("BLMPOP", "0", "1", "empty", "LEFT")
    p.execute_command("BZMPOP", "0", "1", "empty", "MAX", "COUNT", "2")
    p.execute_command("BLMPOP", "0", "1", "n1", "RIGHT", "COUNT", "3")
    replies = [norm(x) for x in p.execute()]
    return {
        "BLMPOP reply": reply,
        "BLMPOP returned after ~0.2 s": in_window,
        "BZMPOP reply": zreply,
        "BZMPOP returned after ~0.2 s": z_in_window,
        "blocked after timeouts": after,
        "push after timeout": pushed,
        "MULTI replies": replies,
        "MULTI answered at once": time.time() - start < 1.0,
        "left": lists(r, "n1"),
    }


SCENARIOS = [
    fifo_one_key,
    one_push_serves_n,
    lpush_many_to_waiter,
    timeout,
    blmove_waits,
    blmove_chain,
    blmove_wrong_type_destination,
    several_keys_served_once,
    multi_does_not_block,
    disconnect_leaves_no_waiter,
    databases_apart,
    resp3,
    wrong_type_and_bad_timeout,
    blmpop_fifo_and_count,
    bzmpop_fifo_and_count,
    mpop_timeouts,
]


def run(scenario, port):
    try:
        return scenario(port)
    except Exception as e:
        return {"scenario failed": "%s: %s" % (type(e).__name__, e)}


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    redis_port, minikv_port = int(sys.argv[1]), int(sys.argv[2])
    differences = 0
    for scenario in SCENARIOS:
        a = run(scenario, redis_port)
        b = run(scenario, minikv_port)
        same = a == b and "scenario failed" not in a
        print("%-32s %s" % (scenario.__name__, "same" if same else "DIFFERENT"))
        for k in sorted(set(a) | set(b)):
            mark = " " if a.get(k) == b.get(k) else "!"
            if same:
                print("   %s %s: %r" % (mark, k, a.get(k)))
            else:
                print("   %s %s:\n        redis:  %r\n        minikv: %r" % (mark, k, a.get(k), b.get(k)))
        if not same:
            differences += 1
    print("%d scenario(s), %d with differences" % (len(SCENARIOS), differences))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
