"""Every command minikv implements describes itself the way Redis 7.0 does.

Clients read the command table: redis-py's cluster client and redis-cli use COMMAND
and COMMAND DOCS (key positions, read-only or write, hints), and users read it to learn
what a command does. For every command and subcommand minikv lists in COMMAND, this
compares with the real server:

* COMMAND INFO: arity, flags, first key, last key, key step;
* COMMAND DOCS: summary, since, group.

Left out on purpose (documented in docs/minikv.md): command tips, detailed key specs,
argument docs, and the flags that belong to features minikv does not have (below).
"""

from __future__ import annotations

from resp_client import parse

#: Flags about features minikv does not have: Sentinel, modules, scripts' busy state,
#: async loading and replication. Every other flag must match exactly.
FLAGS_NOT_MODELLED = {
    b"sentinel",
    b"only_sentinel",
    b"module",
    b"allow_busy",
    b"no_async_loading",
    b"may_replicate",
    b"no_mandatory_keys",
    b"asking",
}


#: minikv commands that Redis 7.0 does not have, each with its reason.
EXTENSIONS = {
    # Redis 7.2's CLIENT SETINFO: redis-py and redis-rs send it on every connect.
    b"client|setinfo",
}


def _items(node):
    kind, value = node
    assert kind in "*~%>", node
    return value


def _text(node) -> bytes:
    kind, value = node
    assert kind in "+$", node
    return value


def _int(node) -> int:
    kind, value = node
    assert kind == ":", node
    return int(value)


def _command_infos(conn, names=None) -> dict[bytes, tuple]:
    """name -> (arity, flags, first, last, step), subcommands included."""
    reply = parse(conn.call("COMMAND", "INFO", *names) if names else conn.call("COMMAND"))
    out = {}

    def walk(entry):
        if entry[0] == "_" or entry[1] is None:
            return
        fields = _items(entry)
        name = _text(fields[0]).lower()
        flags = frozenset(_text(f) for f in _items(fields[2])) - FLAGS_NOT_MODELLED
        out[name] = (_int(fields[1]), flags, _int(fields[3]), _int(fields[4]), _int(fields[5]))
        if len(fields) > 9:
            for sub in _items(fields[9]):
                walk(sub)

    for entry in _items(reply):
        walk(entry)
    return out


def _docs(conn, name: bytes) -> dict[bytes, bytes]:
    """summary, since and group of one command (`parent|sub` for a subcommand)."""
    parent, _, sub = name.partition(b"|")
    reply = _items(parse(conn.call("COMMAND", "DOCS", parent)))
    pairs = list(zip(reply[0::2], reply[1::2])) if reply and reply[0][0] != "%" else reply
    for key, value in pairs:
        if _text(key).lower() != parent:
            continue
        doc = value
        if sub:
            fields = dict(zip((_text(k) for k in _items(doc)[0::2]), _items(doc)[1::2]))
            subs = _items(fields[b"subcommands"])
            subdocs = dict(zip((_text(k).lower() for k in subs[0::2]), subs[1::2]))
            doc = subdocs[name]
        items = _items(doc)
        fields = dict(zip((_text(k) for k in items[0::2]), items[1::2]))
        return {k: _text(fields[k]) for k in (b"summary", b"since", b"group") if k in fields}
    raise AssertionError(f"COMMAND DOCS has no entry for {name!r}")


def test_every_command_describes_itself_like_redis(real_redis, minikv):
    with minikv.connect() as ours, real_redis.connect() as theirs:
        mine = _command_infos(ours)
        assert len(mine) > 150, f"COMMAND lists only {len(mine)} commands"
        reference = _command_infos(theirs)
        problems = []
        for name, info in sorted(mine.items()):
            if name in EXTENSIONS:
                continue
            if name not in reference:
                problems.append(f"{name.decode()}: not a Redis 7.0 command")
                continue
            want = reference[name]
            for field, a, b in zip(("arity", "flags", "first key", "last key", "step"), info, want):
                if a != b:
                    if field == "flags":
                        a, b = sorted(f.decode() for f in a), sorted(f.decode() for f in b)
                    problems.append(f"{name.decode()}: {field} is {a}, Redis says {b}")
            doc_mine, doc_ref = _docs(ours, name), _docs(theirs, name)
            for field in (b"summary", b"since", b"group"):
                if doc_mine.get(field) != doc_ref.get(field):
                    problems.append(
                        f"{name.decode()}: {field.decode()} is {doc_mine.get(field)!r}, "
                        f"Redis says {doc_ref.get(field)!r}"
                    )
        assert not problems, "\n".join(problems)
