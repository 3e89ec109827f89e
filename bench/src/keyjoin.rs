//! Joining one key from `earliest` in a large partition (issue 13, "cost that follows the
//! work"). One partition of N records (1 M and 10 M; `--quick`: 1 M): 10 of them for key
//! "needle", evenly spread, the others for 1,000 other keys. A client subscribes to
//! "needle" from `earliest`; measured: the time to its first record, to its tenth, and
//! to a Checkpoint at the log end (caught up: from there it is live; checkpoints every
//! 100 ms here, 5 s by default), and the records the gateway read from Kafka meanwhile.
//! Three cases, each on a gateway started after the records were written (as after a
//! restart) where another client already follows the whole topic live (from `latest`),
//! in the same run:
//!
//! * `no_index`: the key index off (`key_index_bytes = 0`): what the gateway did before;
//! * `cold`: the gateway's first keyed subscription: it has the index built, and is
//!   served while that happens;
//! * `indexed`: a second client on the same gateway once the index is built;
//! * `restarted`: the first keyed subscription of a gateway started after that one stopped,
//!   sharing its key index topic (it loads the blocks instead of building them).

use std::time::Duration;

use anyhow::{Result, bail};
use bytes::Bytes;
use kafkasocks::Limits;
use kafkasocks::wire::{self, frame::Kind};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::gateway::{InProcess, bench_limits, counter_delta, streams, subscribe_method};
use crate::kafka::{create_topic, delete_topics, produce_bulk_keyed, unique_topic};
use crate::net::Sources;
use crate::procfs::round;
use crate::protocol::{Conn, Event, client_config, decode_records, earliest, latest};

const NEEDLES: u64 = 10;
const KEY: &[u8] = b"needle";

pub(crate) async fn run(quick: bool) -> Result<Value> {
    let sizes: &[u64] = if quick { &[1_000_000] } else { &[1_000_000, 10_000_000] };
    let mut out = Vec::new();
    for &n in sizes {
        let topic = unique_topic("keyjoin");
        create_topic(&topic, 1).await?;
        let result = measure(&topic, n).await;
        delete_topics(&[topic]).await;
        out.push(result?);
    }
    Ok(json!({
        "what": "one partition of N 100-byte records, 10 of them for key \"needle\" (evenly spread), the others \
                 for 1,000 other keys; a client subscribes to \"needle\" from earliest on a gateway started \
                 after the records were written, where another client follows the whole topic from latest; \
                 checkpoints every 100 ms. no_index: key index off (as before); cold: the gateway's \
                 first keyed subscription (the index is built meanwhile); indexed: a second client once the \
                 index is built; restarted: the first keyed subscription of a gateway started after that \
                 one stopped, sharing its key index topic. Times from the Subscribe; read_records: records the gateway read from Kafka \
                 for it (history readers; the index builder's reads separately)",
        "sizes": out,
    }))
}

async fn measure(topic: &str, n: u64) -> Result<Value> {
    let every = n / NEEDLES;
    let started = Instant::now();
    produce_bulk_keyed(topic, n, |i| {
        if i % every == every / 2 { KEY.to_vec() } else { format!("k{}", i % 1_000).into_bytes() }
    })
    .await?;
    eprintln!("keyjoin: {n} records written in {:.1} s", started.elapsed().as_secs_f64());
    let sources = Sources::new(1, 1);
    let limits = || bench_limits(Limits::default()).with_checkpoint_interval(Duration::from_millis(100));

    let gw = InProcess::start(streams(&[("Key", topic)]), limits().with_key_index_bytes(0)).await?;
    let warm = follow(&gw, &sources).await?;
    let no_index = join(&gw, &sources, n).await?;
    drop(warm);
    gw.stop().await;
    eprintln!("keyjoin {n}: no index: {no_index}");

    let shared = unique_topic("keyjoin-index");
    let result = with_index(topic, &shared, n, &sources, started, no_index).await;
    delete_topics(&[shared]).await;
    result
}

/// The cases with the index, which the gateways share through topic `shared`.
async fn with_index(
    topic: &str,
    shared: &str,
    n: u64,
    sources: &std::sync::Arc<Sources>,
    started: Instant,
    no_index: Value,
) -> Result<Value> {
    let limits = || bench_limits(Limits::default()).with_checkpoint_interval(Duration::from_millis(100));
    let gw = InProcess::start_sharing_key_index(shared, streams(&[("Key", topic)]), limits()).await?;
    let warm = follow(&gw, sources).await?;
    let cold = join(&gw, sources, n).await?;
    eprintln!("keyjoin {n}: cold: {cold}");
    let deadline = Instant::now() + Duration::from_secs(300);
    while gw.counters().await.get("key_index_reads_total").copied().unwrap_or(0.0) < n as f64 {
        if Instant::now() > deadline {
            bail!("the key index was not built within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let built_s = round(started.elapsed().as_secs_f64(), 2);
    let indexed = join(&gw, sources, n).await?;
    drop(warm);
    gw.stop().await;
    eprintln!("keyjoin {n}: indexed: {indexed}");
    // Its blocks are shared by the time it stopped (but the open one and those written in
    // its last moments: the restarted gateway reads from the first block missing).
    let gw = InProcess::start_sharing_key_index(shared, streams(&[("Key", topic)]), limits()).await?;
    let warm = follow(&gw, sources).await?;
    let restarted = join(&gw, sources, n).await?;
    drop(warm);
    gw.stop().await;
    eprintln!("keyjoin {n}: restarted: {restarted}");
    let ratio = |what: &str| {
        let before = no_index[what].as_f64().unwrap_or(0.0);
        let after = indexed[what].as_f64().unwrap_or(f64::MAX);
        round(before / after.max(0.001), 1)
    };
    Ok(json!({
        "records": n,
        "no_index": no_index,
        "cold": cold,
        "indexed": indexed,
        "restarted": restarted,
        "index_built_within_s_of_the_first_write": built_s,
        "speedup_first_record": ratio("first_record_ms"),
        "speedup_caught_up": ratio("caught_up_ms"),
    }))
}

/// A client following the whole topic from `latest`: the topic's live reader starts at
/// the log end.
async fn follow(gw: &InProcess, sources: &std::sync::Arc<Sources>) -> Result<Conn> {
    let mut c = Conn::open(sources, gw.addr, client_config(8 << 10)).await?;
    c.send(subscribe(b"", latest())).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c.recv()).await?? {
            Event::Frame(Kind::Subscribed(_)) => return Ok(c),
            Event::Frame(Kind::Error(e)) => bail!("subscription failed: {e:?}"),
            Event::Closed => bail!("closed"),
            _ => {}
        }
    }
}

fn subscribe(key: &[u8], start: wire::start_position::Position) -> Kind {
    let mut request = Vec::new();
    if !key.is_empty() {
        request.extend_from_slice(&[1 << 3 | 2, key.len() as u8]);
        request.extend_from_slice(key);
    }
    Kind::Subscribe(wire::Subscribe {
        id: 1,
        method: subscribe_method("Key"),
        request: Bytes::from(request),
        start: Some(wire::StartPosition { position: Some(start) }),
        credit: 0,
    })
}

/// Subscribes to "needle" from earliest: times to the first record, the last, and a
/// Checkpoint at the log end; records read from Kafka meanwhile.
async fn join(gw: &InProcess, sources: &std::sync::Arc<Sources>, n: u64) -> Result<Value> {
    let before = gw.counters().await;
    let mut c = Conn::open(sources, gw.addr, client_config(8 << 10)).await?;
    let t0 = Instant::now();
    c.send(subscribe(KEY, earliest())).await?;
    let (mut got, mut first, mut last, mut caught_up) = (0, None, None, None);
    let deadline = t0 + Duration::from_secs(300);
    while caught_up.is_none() {
        let event = match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(e) => e?,
            Err(_) => bail!("{got} of {NEEDLES} records and no checkpoint at the log end within 300 s"),
        };
        match event {
            Event::Data(frame) => {
                for r in decode_records(frame)? {
                    if r.key != KEY {
                        bail!("a record for another key: {:?}", r.key);
                    }
                    got += 1;
                    first.get_or_insert(t0.elapsed());
                    if got == NEEDLES {
                        last = Some(t0.elapsed());
                    }
                }
            }
            Event::Frame(Kind::Checkpoint(cp)) => {
                if got == NEEDLES && cp.positions.iter().any(|p| p.next_offset >= n as i64) {
                    caught_up = Some(t0.elapsed());
                }
            }
            Event::Frame(Kind::Error(e)) => bail!("subscription failed: {e:?}"),
            Event::Closed => bail!("closed"),
            Event::Frame(_) => {}
        }
    }
    let delta = counter_delta(&before, &gw.counters().await);
    let ms = |d: Option<Duration>| d.map(|d| round(d.as_secs_f64() * 1e3, 1));
    Ok(json!({
        "first_record_ms": ms(first),
        "last_record_ms": ms(last),
        "caught_up_ms": ms(caught_up),
        "read_records": delta["catch_up_reads_total"],
        "index_reads": delta["key_index_reads_total"],
        "skipped_offsets": delta["key_index_skipped_total"],
    }))
}
