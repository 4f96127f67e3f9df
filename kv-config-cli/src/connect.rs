//! Connection options from natscli-style flags.

use kv_config::store::NatsStore;

use crate::cli::Global;
use crate::error::{CliError, CliResult};

/// Builds the connect options of the flags (user/password, token, creds, nkey, TLS, timeout).
pub async fn options(g: &Global) -> CliResult<async_nats::ConnectOptions> {
    let mut o = async_nats::ConnectOptions::new()
        .name("kvc")
        .connection_timeout(g.timeout)
        .request_timeout(Some(g.timeout))
        .max_reconnects(Some(3));
    match (&g.user, &g.password) {
        (Some(u), p) => o = o.user_and_password(u.clone(), p.clone().unwrap_or_default()),
        (None, Some(_)) => return Err(CliError::Usage("--password needs --user".into())),
        (None, None) => {}
    }
    if let Some(t) = &g.token {
        o = o.token(t.clone());
    }
    if let Some(path) = &g.creds {
        o = o.credentials_file(path).await.map_err(|e| CliError::Usage(format!("--creds {}: {e}", path.display())))?;
    }
    if let Some(path) = &g.nkey {
        let seed = std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("--nkey {}: {e}", path.display())))?;
        let seed = seed.lines().map(str::trim).find(|l| l.starts_with('S')).unwrap_or(seed.trim()).to_string();
        o = o.nkey(seed);
    }
    match (&g.tlscert, &g.tlskey) {
        (Some(cert), Some(key)) => o = o.add_client_certificate(cert.clone(), key.clone()).require_tls(true),
        (None, None) => {}
        _ => return Err(CliError::Usage("--tlscert and --tlskey go together".into())),
    }
    if let Some(ca) = &g.tlsca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(o)
}

/// Connects to the server(s) of `--server`.
pub async fn connect(g: &Global) -> CliResult<NatsStore> {
    let options = options(g).await?;
    let servers: Vec<async_nats::ServerAddr> = g
        .server
        .split(',')
        .map(|s| s.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Usage(format!("--server `{}`: {e}", g.server)))?;
    NatsStore::connect(servers, options)
        .await
        .map_err(|e| CliError::Other(format!("cannot connect to {}: {e}", g.server)))
}
