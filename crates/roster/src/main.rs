//! The `roster` command line: `serve` (default) and `token`. Nothing else lives here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roster::auth::{expiry_in, Authenticator, Claims};
use roster::config::{self, Config, LogFormat};

#[derive(Parser)]
#[command(name = "roster", version, about = "Roster: a self-hosted real-time presence server", after_help = config::help_text())]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Default, Clone)]
struct ServeArgs {
    /// TOML configuration file
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// HTTP + WebSocket address (`listen`), e.g. 127.0.0.1:7400; port 0 = any free port
    #[arg(long)]
    listen: Option<String>,
    /// `database.url`
    #[arg(long)]
    database_url: Option<String>,
    /// `engine.url`: `memory`, `redis://host:port` or `redis-cluster://host:port,…`
    #[arg(long)]
    engine: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default)
    Serve(ServeArgs),
    /// Apply the database migrations (database.url or --database-url), then exit
    Migrate {
        /// `database.url`
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Mint a signed token with the configured secret and print it
    Token {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Comma-separated roles, e.g. admin,monitor
        #[arg(long, default_value = "")]
        roles: String,
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 24h
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

fn load(args: &ServeArgs) -> Result<Config, config::ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ROSTER_"))
        .collect();
    let mut flags = vec![];
    if let Some(v) = &args.listen {
        flags.push(("listen".to_string(), v.clone()));
    }
    if let Some(v) = &args.database_url {
        flags.push(("database.url".to_string(), v.clone()));
    }
    if let Some(v) = &args.engine {
        flags.push(("engine.url".to_string(), v.clone()));
    }
    Config::load(args.config.as_deref(), &env, &flags)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token {
            user,
            tenant,
            roles,
            name,
            ttl,
        }) => {
            let args = ServeArgs {
                config: cli.serve.config,
                ..Default::default()
            };
            let config = match load(&args) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            if config.auth.jwt_secret.is_none() {
                return fail("roster token needs auth.jwt_secret (e.g. ROSTER_AUTH_JWT_SECRET=...) so the server can verify the token");
            }
            let ttl = match config::parse_duration(&ttl) {
                Ok(t) => t,
                Err(e) => return fail(&format!("--ttl: {e}")),
            };
            if roster::ids::TenantId::parse(&tenant).is_err()
                || roster::ids::UserId::parse(&user).is_err()
            {
                return fail("--tenant must match [A-Za-z0-9_-]{1,64}; --user must be 1-256 characters without control characters");
            }
            let auth = match Authenticator::from_config(&config) {
                Ok((a, _)) => a,
                Err(e) => return fail(&e.0),
            };
            let claims = Claims {
                sub: user,
                tenant: Some(tenant),
                roles: roles
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(String::from)
                    .collect(),
                name,
                info: None,
                exp: Some(expiry_in(ttl)),
            };
            match auth.mint(&claims) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.0),
            }
        }
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Migrate { database_url }) => {
            let args = ServeArgs {
                config: cli.serve.config,
                database_url,
                ..Default::default()
            };
            let config = match load(&args) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            match runtime.block_on(roster::server::open_store(&config.database.url)) {
                Ok(store) => {
                    println!(
                        "migrations applied ({}: {})",
                        store.backend(),
                        roster::server::redact(&config.database.url)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        None => serve(cli.serve),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("roster: {msg}");
    ExitCode::from(2)
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colour only for a person at a terminal: escape codes in a file, a pipe or a
    // log collector are noise (SPEC §12 `log.format`). JSON is never coloured.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == LogFormat::Json {
        builder.json().with_ansi(false).init();
    } else {
        use std::io::IsTerminal;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let running = match roster::server::start(config, stop.clone()).await {
            Ok(r) => r,
            Err(e) => return fail(&e.to_string()),
        };
        let mut task = running.task;
        tokio::select! {
            _ = shutdown_signal() => {
                stop.cancel();
                let _ = task.await;
            }
            _ = &mut task => {}
        }
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
