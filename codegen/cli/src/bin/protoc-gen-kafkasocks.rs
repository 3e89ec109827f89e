//! `protoc-gen-kafkasocks`: the KafkaSocks generator as a protoc / buf plugin. protoc runs it
//! with a `CodeGeneratorRequest` on stdin and reads the `CodeGeneratorResponse` from stdout;
//! the work is [`kafkasocks_build::plugin::run`] (parameters and behaviour documented there
//! and in docs/codegen-plugins.md).
//!
//! ```text
//! protoc -I proto --plugin=protoc-gen-kafkasocks=$(command -v protoc-gen-kafkasocks) \
//!     --kafkasocks_out=web/src/gen --kafkasocks_opt=runtime=vendor proto/chat/v1/chat.proto
//! ```
//!
//! Generation errors go back to protoc in the response (protoc prints them and fails); this
//! binary itself fails (exit 1, a message on stderr) only when stdin or stdout do.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).is_some_and(|a| a == "--version" || a == "-V") {
        println!("protoc-gen-kafkasocks {}", kafkasocks_build::VERSION);
        return ExitCode::SUCCESS;
    }
    match respond() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protoc-gen-kafkasocks: {e:#}");
            eprintln!("  (a protoc plugin: run it through protoc or buf, which send the request on stdin)");
            ExitCode::from(1)
        }
    }
}

fn respond() -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut request = Vec::new();
    std::io::stdin().read_to_end(&mut request).context("reading the CodeGeneratorRequest from stdin")?;
    let response = kafkasocks_build::plugin::run(&request);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&response).and_then(|()| stdout.flush()).context("writing the CodeGeneratorResponse to stdout")?;
    Ok(())
}
