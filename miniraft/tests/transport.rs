//! The TCP transport on loopback: messages both ways, reconnecting to a restarted peer,
//! garbage on the listener, misaddressed messages, a full queue, and shutdown.
//!
//! Run: `cargo test -p miniraft --test transport`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use miniraft::codec::encode_message;
use miniraft::transport::{Transport, PEER_QUEUE_MESSAGES};
use miniraft::{Message, MessageBody, NodeId, SnapshotMeta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bounds every wait, so that a broken transport fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

fn vote(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::RequestVote { last_log_index: term, last_log_term: 1, transfer: false },
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

fn start(id: NodeId, listener: TcpListener, peers: &[(NodeId, SocketAddr)]) -> (Transport, mpsc::Receiver<Message>) {
    let (inbox, inbox_rx) = mpsc::channel(1024);
    let transport = Transport::start(id, listener, peers.iter().copied().collect::<BTreeMap<_, _>>(), inbox);
    (transport, inbox_rx)
}

async fn receive(inbox: &mut mpsc::Receiver<Message>) -> Message {
    timeout(WAIT, inbox.recv()).await.expect("a message within the wait").expect("the inbox is open")
}

/// Sends `make(n)` every few milliseconds until one arrives (the first messages can be
/// lost while a connection is set up or torn down; Raft would resend the same way).
async fn send_until_received(
    transport: &Transport,
    inbox: &mut mpsc::Receiver<Message>,
    make: impl Fn(u64) -> Message,
) -> Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    for n in 0.. {
        transport.send(make(n));
        if let Ok(Some(message)) = timeout(Duration::from_millis(50), inbox.recv()).await {
            return message;
        }
        assert!(tokio::time::Instant::now() < deadline, "no message got through within {WAIT:?}");
    }
    unreachable!("the loop returns or panics")
}

#[tokio::test]
async fn two_transports_exchange_messages_both_ways() {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let (t1, mut inbox1) = start(1, l1, &[(1, a1), (2, a2)]);
    let (t2, mut inbox2) = start(2, l2, &[(1, a1), (2, a2)]);

    for term in 1..=100 {
        t1.send(vote(1, 2, term));
    }
    for term in 1..=100 {
        assert_eq!(receive(&mut inbox2).await, vote(1, 2, term), "in order, none lost on a healthy link");
    }
    let append = Message {
        from: 2,
        to: 1,
        term: 7,
        body: MessageBody::AppendEntries {
            prev_log_index: 3,
            prev_log_term: 2,
            entries: vec![miniraft::Entry {
                term: 7,
                index: 4,
                payload: miniraft::EntryPayload::Command(Bytes::from_static(b"SET k v")),
            }],
            leader_commit: 3,
            round: 9,
        },
    };
    t2.send(append.clone());
    assert_eq!(receive(&mut inbox1).await, append);
    assert_eq!(t1.stats().sent, 100);
    assert_eq!(t2.stats().received, 100);
    assert_eq!(t1.stats().received, 1);
}

#[tokio::test]
async fn a_peer_that_restarts_on_the_same_port_is_reconnected() {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let peers = [(1, a1), (2, a2)];
    let (t1, _inbox1) = start(1, l1, &peers);
    let (t2, mut inbox2) = start(2, l2, &peers);
    t1.send(vote(1, 2, 1));
    assert_eq!(receive(&mut inbox2).await, vote(1, 2, 1));

    t2.shutdown();
    drop(t2);
    // The old inbox closes once every task holding it has stopped.
    assert_eq!(timeout(WAIT, inbox2.recv()).await.expect("closes within the wait"), None);

    // Messages while node 2 is down are queued or dropped, never blocking the sender;
    // those queued before node 1 notices the closed connection may still arrive later
    // (a delayed message, which Raft tolerates).
    for term in 2..50 {
        t1.send(vote(1, 2, term));
    }
    let l2 = TcpListener::bind(a2).await.expect("rebind the same port");
    let (_t2, mut inbox2) = start(2, l2, &peers);
    let got = send_until_received(&t1, &mut inbox2, |n| vote(1, 2, 100 + n)).await;
    assert_eq!((got.from, got.to), (1, 2), "{got:?}");
    let stats = t1.stats();
    assert!(stats.connects >= 2, "node 1 should have dialled twice: {stats:?}");
}

#[tokio::test]
async fn garbage_on_the_listener_closes_that_connection_and_nothing_else() {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let peers = [(1, a1), (2, a2)];
    let (t1, _inbox1) = start(1, l1, &peers);
    let (t2, mut inbox2) = start(2, l2, &peers);

    let cases: [(&str, Vec<u8>); 3] = [
        ("random bytes", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a length over MAX_FRAME_BYTES", [u32::MAX.to_le_bytes(), [0; 4]].concat()),
        ("a flipped bit", {
            let mut frame = Vec::new();
            encode_message(&vote(1, 2, 5), &mut frame);
            frame[12] ^= 0x40;
            frame
        }),
    ];
    for (k, (what, garbage)) in cases.iter().enumerate() {
        let mut raw = TcpStream::connect(a2).await.expect("connect");
        raw.write_all(garbage).await.expect("write garbage");
        let mut rest = Vec::new();
        let read = timeout(WAIT, raw.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{what}: the connection should be closed, got {read:?}");
        assert_eq!(t2.stats().bad_frames, k as u64 + 1, "{what}: counted as a bad frame");
    }

    // The transport still works, on its own connections and on new ones.
    t1.send(vote(1, 2, 6));
    assert_eq!(receive(&mut inbox2).await, vote(1, 2, 6));
    assert!(inbox2.try_recv().is_err(), "garbage delivered nothing");
}

#[tokio::test]
async fn a_message_for_another_node_is_dropped_and_the_connection_stays_up() {
    let (l2, a2) = listener().await;
    let (t2, mut inbox2) = start(2, l2, &[]);
    let mut raw = TcpStream::connect(a2).await.expect("connect");
    let mut frames = Vec::new();
    encode_message(&vote(1, 3, 1), &mut frames); // for node 3, not 2
    encode_message(&vote(1, 2, 2), &mut frames);
    raw.write_all(&frames).await.expect("write");
    assert_eq!(receive(&mut inbox2).await, vote(1, 2, 2));
    assert_eq!(t2.stats().dropped_misaddressed, 1);
}

#[tokio::test]
async fn a_full_queue_drops_rather_than_blocks() {
    // A "peer" that accepts connections into its backlog but never reads: our writes fill
    // the socket buffers, the write blocks, and the queue behind it fills up.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stuck_addr = stuck.local_addr().expect("addr");
    let (l1, a1) = listener().await;
    let (t1, _inbox1) = start(1, l1, &[(1, a1), (2, stuck_addr)]);

    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let snapshot_chunk = |offset: u64| Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta::default(),
            offset,
            data: chunk.clone(),
            done: false,
            round: 0,
        },
    };
    // `send` is synchronous: if it could block, this loop would hang the runtime (the
    // test's WAIT-bounded receive below would never run).
    let total = 20 * PEER_QUEUE_MESSAGES as u64;
    for offset in 0..total {
        t1.send(snapshot_chunk(offset));
        if offset % 256 == 0 {
            tokio::task::yield_now().await; // let the peer task fill the socket
        }
    }
    let stats = t1.stats();
    assert!(stats.dropped_queue_full > 0, "a stuck peer should make the queue overflow: {stats:?}");
    assert!(
        stats.sent + stats.dropped_queue_full + stats.dropped_unreachable + PEER_QUEUE_MESSAGES as u64 + 32 >= total,
        "every message is sent, queued or counted as dropped: {stats:?}"
    );
    drop(stuck);
}

#[tokio::test]
async fn unknown_peers_are_dropped_and_shutdown_stops_everything() {
    let (l1, a1) = listener().await;
    let (t1, mut inbox1) = start(1, l1, &[(1, a1)]);
    t1.send(vote(1, 9, 1));
    assert_eq!(t1.stats().dropped_unknown_peer, 1);
    assert_eq!(t1.local_addr(), Some(a1));

    t1.shutdown();
    assert_eq!(timeout(WAIT, inbox1.recv()).await.expect("the inbox closes"), None);
    // The listener is closed: a new connection is refused (or reset at once).
    match TcpStream::connect(a1).await {
        Err(_) => {}
        Ok(mut stream) => {
            let mut buf = [0u8; 1];
            let read = timeout(WAIT, stream.read(&mut buf)).await.expect("no hang");
            assert!(matches!(read, Ok(0) | Err(_)), "a shut-down transport still serves: {read:?}");
        }
    }
    t1.shutdown(); // idempotent
}
