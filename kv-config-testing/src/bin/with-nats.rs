//! Runs a command with `NATS_URL` pointing at a fresh nats-server (JetStream, loopback, temp dir),
//! then stops the server: `cargo run -p kv-config-testing --bin with-nats -- cargo run --example quickstart`.
//! With no command, starts the server, prints its URL and waits for Ctrl-C.

use std::process::{Command, ExitCode};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = match kv_config_testing::NatsServer::try_start(Vec::new(), port_arg()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("with-nats: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("with-nats: nats-server with JetStream at {} (store {})", server.url(), server.store_dir().display());
    let Some((cmd, rest)) = args.split_first() else {
        println!("{}", server.url());
        let _ = tokio::signal::ctrl_c().await;
        return ExitCode::SUCCESS;
    };
    let status = Command::new(cmd).args(rest).env("NATS_URL", server.url()).status();
    drop(server);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("with-nats: `{cmd}` exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("with-nats: cannot run `{cmd}`: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `WITH_NATS_PORT=4222` pins the port (so other terminals can connect); random otherwise.
fn port_arg() -> Option<u16> {
    std::env::var("WITH_NATS_PORT").ok().and_then(|p| p.parse().ok())
}
