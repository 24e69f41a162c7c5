"""Clients we did not write, against minikv: redis-cli and redis-benchmark.

These tools have their own ideas about the protocol (inline PING, `--pipe`'s trailing
ECHO, RESP3 formatting, pipelined batches), so they find what our own clients cannot.
Where the expected output is long, the real redis-server run with the same input is
the oracle; a few lines are also written out by hand so the test does not depend on
the oracle alone.

Left out: an interactive redis-cli session through a pty (its prompt and hints add
nothing to the protocol checks here).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import HOST

CLI = shutil.which("redis-cli")
BENCH = shutil.which("redis-benchmark")

pytestmark = pytest.mark.skipif(
    CLI is None or BENCH is None,
    reason="redis-cli / redis-benchmark not installed (Debian: apt-get install redis-tools)",
)

#: Every redis-cli / redis-benchmark run is bounded: a server that stops answering
#: must fail the test, not hang the suite.
TOOL_TIMEOUT_S = 120


def cli(port: int, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "-h", HOST, "-p", str(port), *args],
        input=stdin, capture_output=True, timeout=TOOL_TIMEOUT_S,
    )


# A script whose every reply is deterministic (single-element hashes and sets, no TTL
# values), covering every reply type redis-cli formats differently.
SCRIPT = """\
PING
SET greeting "hello world"
GET greeting
GET missing
INCR counter
INCRBY counter 41
APPEND greeting !
STRLEN greeting
RPUSH list a b c
LRANGE list 0 -1
LPOP list
HSET hash field value
HGETALL hash
SADD set member
SMEMBERS set
ZADD zset 1.5 one 2 two
ZRANGE zset 0 -1 WITHSCORES
ZSCORE zset one
TYPE list
EXISTS greeting missing
LPUSH greeting x
NOSUCHCOMMAND arg
MULTI
INCR counter
GET counter
EXEC
DEL greeting list hash set zset counter
DBSIZE
"""

#: What redis-cli prints for SCRIPT in raw mode (stdout not a tty), written by hand;
#: in raw mode redis-cli follows an error with an empty line.
SCRIPT_EXPECTED_RAW = """\
PONG
OK
hello world

1
42
12
12
3
a
b
c
a
1
field
value
1
member
2
one
1.5
two
2
1.5
list
1
WRONGTYPE Operation against a key holding the wrong kind of value

ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'arg' 

OK
QUEUED
QUEUED
43
43
6
0
"""


def test_cli_script_on_stdin(real_redis, minikv):
    out = cli(minikv.port, stdin=SCRIPT.encode())
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == SCRIPT_EXPECTED_RAW
    oracle = cli(real_redis.port, stdin=SCRIPT.encode())
    assert out.stdout == oracle.stdout


@pytest.mark.parametrize("flags", [["--no-raw"], ["-3", "--no-raw"], ["-3"]], ids=["no-raw", "resp3-no-raw", "resp3"])
def test_cli_formatted_output_matches_redis(real_redis, minikv, flags):
    """Formatted output ('(integer) 1', '1) "a"', RESP3 '(double)', '1# "f" => "v"') is
    built from the reply types, so any type difference shows here."""
    outputs = []
    for srv in (real_redis, minikv):
        result = cli(srv.port, *flags, stdin=SCRIPT.encode())
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.decode())
    assert outputs[1] == outputs[0]


def test_cli_no_raw_shapes(minikv):
    """A few formatted replies written out by hand (the oracle test covers the rest)."""
    assert cli(minikv.port, "--no-raw", "RPUSH", "l", "a", "b").stdout == b"(integer) 2\n"
    assert cli(minikv.port, "--no-raw", "LRANGE", "l", "0", "-1").stdout == b'1) "a"\n2) "b"\n'
    assert cli(minikv.port, "--no-raw", "GET", "nope").stdout == b"(nil)\n"
    assert cli(minikv.port, "--no-raw", "LPUSH", "l").stdout == (
        b"(error) ERR wrong number of arguments for 'lpush' command\n"
    )
    assert cli(minikv.port, "-3", "--no-raw", "HSET", "h", "f", "v").stdout == b"(integer) 1\n"
    assert cli(minikv.port, "-3", "--no-raw", "HGETALL", "h").stdout == b'1# "f" => "v"\n'
    assert cli(minikv.port, "-3", "--no-raw", "ZADD", "z", "2.5", "m").stdout == b"(integer) 1\n"
    assert cli(minikv.port, "-3", "--no-raw", "ZSCORE", "z", "m").stdout == b"(double) 2.5\n"
    assert cli(minikv.port, "-3", "--no-raw", "GET", "nope").stdout == b"(nil)\n"


def mass_insert(n: int) -> bytes:
    parts = []
    for i in range(n):
        key, value = b"key:%d" % i, b"value:%d" % i
        parts.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
    return b"".join(parts)


def test_cli_pipe_mass_insert(minikv):
    n = 10_000
    result = cli(minikv.port, "--pipe", stdin=mass_insert(n))
    text = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, text
    assert f"errors: 0, replies: {n}" in text, text
    assert cli(minikv.port, "DBSIZE").stdout == b"%d\n" % n
    assert cli(minikv.port, "GET", "key:9999").stdout == b"value:9999\n"


# -- redis-benchmark -------------------------------------------------------------------

#: The tests redis-benchmark 7.0 runs by default, as its -q output names them.
DEFAULT_BENCHMARKS = [
    "PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD",
    "HSET", "SPOP", "ZADD", "ZPOPMIN", "LPUSH (needed to benchmark LRANGE)",
    "LRANGE_100 (first 100 elements)", "LRANGE_300 (first 300 elements)",
    "LRANGE_500 (first 500 elements)", "LRANGE_600 (first 600 elements)", "MSET (10 keys)",
]
RESULT_LINE = re.compile(r"^(.+?): ([0-9.]+) requests per second")


def benchmark(port: int, *args: str):
    """Runs redis-benchmark; returns ({test: rps}, other output lines)."""
    result = subprocess.run(
        [BENCH, "-h", HOST, "-p", str(port), "-q", *args],
        capture_output=True, timeout=TOOL_TIMEOUT_S,
    )
    # -q rewrites a progress line with \r before printing the result on its own line.
    lines = [ln.strip() for ln in re.split(r"[\r\n]", result.stdout.decode(errors="replace"))]
    rates, other = {}, []
    for line in lines:
        m = RESULT_LINE.match(line)
        if m:
            rates[m.group(1)] = float(m.group(2))
        elif line and "rps=" not in line:
            other.append(line)
    other += [ln for ln in result.stderr.decode(errors="replace").splitlines() if ln.strip()]
    return result.returncode, rates, other


@pytest.mark.parametrize("extra", [[], ["-P", "16"]], ids=["plain", "pipelined-16"])
def test_benchmark_default_suite(minikv, extra):
    """redis-benchmark 7.0 exits on the first error reply, so a missing command shows
    as a missing result line and an 'Error' line."""
    code, rates, other = benchmark(minikv.port, "-n", "2000", *extra)
    missing = [name for name in DEFAULT_BENCHMARKS if name not in rates]
    assert not missing, f"no result for {missing}; other output: {other}"
    assert all(rps > 0 for rps in rates.values()), rates
    assert not other, f"unexpected output: {other}"
    assert code == 0
    with minikv.connect() as c:
        assert c.call("PING") == b"+PONG\r\n"


def test_benchmark_selected_tests_with_keyspace(minikv):
    """-r makes every request hit a random key of a 1000-key space: many shards."""
    code, rates, other = benchmark(minikv.port, "-n", "2000", "-r", "1000", "-t", "set,get,incr,lpush,hset,sadd,zadd")
    assert set(rates) >= {"SET", "GET", "INCR", "LPUSH", "HSET", "SADD", "ZADD"}, (rates, other)
    assert not other and code == 0, other
    with minikv.connect() as c:
        assert c.call("PING") == b"+PONG\r\n"
