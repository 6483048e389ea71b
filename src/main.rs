//! The command line: run, check, demo, backend. Everything else is the library.

use clap::{Parser, Subcommand};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ringmaster", version, about = "An edge proxy for replicated and sharded services")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the config file until SIGTERM or SIGINT; SIGHUP reloads it.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file; print every problem as file:line:col.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start three built-in replicas and a load balancer in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Run one built-in backend replica (for tests and experiments).
    Backend {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "backend")]
        name: String,
        /// Answer every connection with bytes that are not HTTP.
        #[arg(long)]
        garbage: bool,
        /// Delay every answer by this many milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RINGMASTER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config } => ringmaster::server::run(config),
        Cmd::Check { config } => match ringmaster::config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Cmd::Demo { listen, admin } => ringmaster::demo::run(ringmaster::demo::DemoOpts { listen, admin }),
        Cmd::Backend { listen, name, garbage, delay_ms } => backend(listen, name, garbage, delay_ms),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn backend(listen: SocketAddr, name: String, garbage: bool, delay_ms: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(listen).await?;
        if garbage {
            ringmaster::backend::serve_garbage(l).await;
        } else {
            ringmaster::backend::serve(l, name, std::time::Duration::from_millis(delay_ms)).await;
        }
        Ok(())
    })
}
