//! A gateway process for the multi-process and Node/browser tests:
//! `fixture-gateway TOPIC [PARTITIONS]` creates TOPIC when PARTITIONS is given (and it is
//! missing), serves `test.v1.Records/Watch` and `test.v1.Records/Put` on it (key: field 1
//! of the request) on a free port, and prints `LISTENING <addr>` once it accepts
//! connections. Stops (gracefully) on stdin EOF.
//!
//! Anonymous access (a test fixture). Browser pages may connect from the origins listed,
//! comma-separated, in `$FIXTURE_ORIGINS` (none by default: browsers are refused).
//! `$FIXTURE_LISTEN` is the address to listen on (default 127.0.0.1:0, a free port);
//! `$FIXTURE_PUBLISH_JITTER_MS`, when set, makes the publish hook wait a random 0..N ms
//! (the publish-order tests). `$FIXTURE_CLUSTER`, when set, makes the gateway a node of
//! that cluster (exactly-once publishes across nodes); `$FIXTURE_BEHIND_PROXY=1` trusts
//! 127.0.0.1 as a proxy and lifts the per-address connection bound (every client of a
//! local load balancer comes from one address).

use kafkasocks::{ClusterConfig, Gateway, GatewayConfig, KafkaConfig, KeyField, OriginPolicy, Streams};
use kafkasocks_tests::{Jittery, PUBLISH, SUBSCRIBE};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kafkasocks_tests::init_tracing();
    let topic = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: fixture-gateway TOPIC [PARTITIONS]"))?;
    if let Some(p) = std::env::args().nth(2)
        && let Err(e) = kafkasocks_tests::create_topic(&topic, p.parse()?).await
        && !e.to_string().contains("already exists")
    {
        return Err(e);
    }
    let origins = std::env::var("FIXTURE_ORIGINS").unwrap_or_default();
    let origins =
        origins.split(',').map(str::trim).filter(|o| !o.is_empty()).fold(OriginPolicy::new(), OriginPolicy::allow);
    let listen = std::env::var("FIXTURE_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let mut config = GatewayConfig::new(KafkaConfig::from_env()?).listen(listen.parse()?).origins(origins);
    if let Ok(name) = std::env::var("FIXTURE_CLUSTER") {
        config = config.cluster(ClusterConfig::new(name));
    }
    if std::env::var("FIXTURE_BEHIND_PROXY").is_ok_and(|v| v == "1") {
        let limits = config.limits.clone().with_max_connections_per_address(100_000);
        config = config.trusted_proxies(["127.0.0.1"]).limits(limits);
    }
    let streams = match std::env::var("FIXTURE_PUBLISH_JITTER_MS") {
        Ok(ms) => Streams::new().subscribe(SUBSCRIBE, &topic, KeyField::new(1)).publish(
            PUBLISH,
            &topic,
            Jittery { max: std::time::Duration::from_millis(ms.parse()?) },
        ),
        Err(_) => kafkasocks_tests::streams(&topic),
    };
    let gw = Gateway::builder(config).streams(streams).allow_anonymous().bind().await?;
    println!("LISTENING {}", gw.local_addr());
    let stop = gw.shutdown_handle();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while matches!(tokio::io::stdin().read(&mut buf).await, Ok(n) if n > 0) {}
        stop.shutdown();
    });
    gw.run().await?;
    Ok(())
}
