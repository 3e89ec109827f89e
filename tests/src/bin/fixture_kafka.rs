//! Kafka chores for the Node and browser tests, against `$KAFKA_BOOTSTRAP`:
//!
//! * `fixture-kafka create TOPIC PARTITIONS`
//! * `fixture-kafka produce TOPIC COUNT` — keys `k0`..`k9`, values `v<i>`; prints one line
//!   per record, `partition offset key`, then `DONE COUNT`
//! * `fixture-kafka delete-records TOPIC PARTITION OFFSET` — moves the log start
//! * `fixture-kafka delete TOPIC`

use anyhow::{Context, bail};
use kafkasocks_tests::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).with_context(|| format!("missing argument {i}; see the file's doc comment"));
    match arg(0)?.as_str() {
        "create" => create_topic(arg(1)?, arg(2)?.parse()?).await?,
        "produce" => {
            let (topic, count): (&str, usize) = (arg(1)?, arg(2)?.parse()?);
            let p = producer();
            let mut out = String::new();
            for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
                let futs = chunk.iter().map(|i| {
                    let key = format!("k{}", i % 10);
                    let value = format!("v{i}");
                    let p = &p;
                    async move { produce(p, topic, None, key.as_bytes(), value.as_bytes()).await.map(|r| (r, key)) }
                });
                for r in futures_util::future::join_all(futs).await {
                    let ((part, off), key) = r?;
                    out.push_str(&format!("{part} {off} {key}\n"));
                }
            }
            println!("{out}DONE {count}");
        }
        "delete-records" => delete_records_before(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?).await?,
        "delete" => delete_topic(arg(1)?).await?,
        other => bail!("unknown command {other:?}; see the file's doc comment"),
    }
    Ok(())
}
