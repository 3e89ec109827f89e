//! A gateway process for the multi-process and Node/browser tests:
//! `fixture-gateway TOPIC [PARTITIONS]` creates TOPIC when PARTITIONS is given (and it is
//! missing), serves `test.v1.Records/Watch` and `test.v1.Records/Put` on it (key: field 1
//! of the request) on a free port, and prints `LISTENING <addr>` once it accepts
//! connections. Stops (gracefully) on stdin EOF.
//!
//! Anonymous access (a test fixture). Browser pages may connect from the origins listed,
//! comma-separated, in `$FIXTURE_ORIGINS` (none by default: browsers are refused).

use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, OriginPolicy};
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
    let config = GatewayConfig::new(KafkaConfig::from_env()?).listen("127.0.0.1:0".parse()?).origins(origins);
    let gw = Gateway::builder(config).streams(kafkasocks_tests::streams(&topic)).allow_anonymous().bind().await?;
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
