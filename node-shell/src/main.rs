//! `node-shell`: parses the command line and wires the parts together.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use node_shell::config::RunConfig;
use node_shell::devnet::{DevnetOptions, DevnetTransport};
use node_shell::{identity, logging, rpc, Error, Node};
use tokio_util::task::TaskTracker;
use transport::{Libp2pConfig, Transport};

/// Sequencer node of a threshold-signing sequencer pool.
#[derive(Parser)]
#[command(name = "node-shell", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    /// libp2p on 127.0.0.1.
    Libp2p,
    /// In-process channels.
    Memory,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one sequencer node from a TOML config.
    Run {
        /// Config file (see node-shell/examples/node.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Starts a local pool, runs keygen, signs batches, adds and removes a sequencer
    /// (reshares) and checks the address is unchanged and signatures verify.
    Devnet {
        /// Initial number of sequencers (4..=11; a pool of 3 would sign 3-of-3 and could
        /// not lose a member); one candidate more is started.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Transport between the nodes.
        #[arg(long, value_enum, default_value_t = TransportArg::Libp2p)]
        transport: TransportArg,
        /// Batches signed before the first reshare.
        #[arg(long, default_value_t = 2)]
        batches: usize,
        /// Epoch length in seconds (block producer rotation).
        #[arg(long, default_value_t = 10)]
        epoch_seconds: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout_secs: u64,
        /// Where every node's log goes (level from RUST_LOG, default info). Default:
        /// node-shell-devnet-<UTC time>-<pid>.log in the temp directory. The terminal
        /// shows only the demo's progress, warnings and errors.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Also serve a second key (L1 role "state", its own inbox): its own keygen,
        /// registration, batches and reshares beside the batches key's.
        #[arg(long)]
        state_key: bool,
        /// The keys' threshold protocol: cggmp21 (default) or dkls23.
        #[arg(long, default_value = "cggmp21")]
        protocol: tss_core::Protocol,
    },
    /// Generates an ed25519 identity key file and prints the node id.
    GenIdentity {
        /// Where to write the key (mode 0600).
        #[arg(long, short)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

async fn run_node(config: PathBuf) -> Result<(), Error> {
    let cfg = RunConfig::load(&config)?;
    // The API token first: a token file others may read stops the node before it starts.
    let access = cfg.rpc.access()?;
    let identity = identity::load(&cfg.identity_file)?;
    let id = identity.node_id();
    let listen = cfg.listen.parse().map_err(|e| Error::ConfigInvalid {
        field: "transport.listen".into(),
        reason: format!("{e}"),
    })?;
    let signer: Arc<dyn tss_core::IdentitySigner> = Arc::new(identity.clone());
    let mut p2p = Libp2pConfig::new(identity, listen);
    for (i, (peer, addr)) in cfg.peer_addrs.iter().enumerate() {
        let addr = addr.parse().map_err(|e| Error::ConfigInvalid {
            field: format!("peers[{i}].address"),
            reason: format!("{e}"),
        })?;
        p2p = p2p.with_peer(*peer, addr);
    }
    let libp2p = node_shell::net::start_libp2p(p2p).await?;
    let stats_of = libp2p.clone();
    let transport: Arc<dyn Transport> = Arc::new(libp2p);
    // One token stops everything: the node's loops and the HTTP server.
    let shutdown = cfg.settings.shutdown.clone();
    let tasks = TaskTracker::new();
    let node_tasks = cfg.settings.tasks.clone();
    let node = Node::start(cfg.settings, transport, signer, "libp2p").await?;
    node.metrics().watch_transport(move || stats_of.stats());
    let (addr, server) =
        rpc::serve_with_shutdown(node, cfg.rpc_listen, access, shutdown.clone()).await?;
    tasks.spawn(server);
    tasks.close();
    tracing::info!(
        node = %id.to_hex(),
        rpc = %addr,
        rpc_token_file = %cfg.rpc.token_file.display(),
        "node running; SIGINT or SIGTERM stops it"
    );
    stop_signal().await?;
    tracing::info!(
        grace_secs = SHUTDOWN_GRACE.as_secs(),
        "stopping: finishing HTTP requests in flight (a second signal stops at once)"
    );
    shutdown.cancel();
    node_tasks.close();
    tokio::select! {
        () = async { tasks.wait().await; node_tasks.wait().await } => tracing::info!("stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after the grace period; stopping anyway")
        }
        _ = stop_signal() => tracing::warn!("second signal; stopping at once"),
    }
    Ok(())
}

/// How long a stopping node waits for HTTP requests in flight (a signing run, a reshare).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut log_hint = None;
    let result = match cli.command {
        Command::Run { config } => {
            logging::init_stderr("info");
            run_node(config).await
        }
        Command::Devnet {
            nodes,
            transport,
            batches,
            epoch_seconds,
            timeout_secs,
            log_file,
            state_key,
            protocol,
        } => {
            let log_file = log_file.unwrap_or_else(logging::default_devnet_log_path);
            if let Err(e) = logging::init_devnet(&log_file) {
                eprintln!(
                    "error: cannot create the log file {}: {e}",
                    log_file.display()
                );
                return ExitCode::FAILURE;
            }
            let mut opts = DevnetOptions::default();
            opts.nodes = nodes;
            opts.transport = match transport {
                TransportArg::Libp2p => DevnetTransport::Libp2p,
                TransportArg::Memory => DevnetTransport::InMemory,
            };
            opts.batches = batches;
            opts.epoch_length = Duration::from_secs(epoch_seconds.max(1));
            opts.timeout = Duration::from_secs(timeout_secs);
            opts.log_file = Some(log_file.clone());
            opts.state_key = state_key;
            opts.protocol = protocol;
            log_hint = Some(log_file);
            // `run` stops the nodes and waits for their tasks, the pool layers' included.
            node_shell::devnet::run(opts).await.map(|_| ())
        }
        Command::GenIdentity { out, force } => identity::generate(&out, force).map(|id| {
            println!("{}", id.node_id().to_hex());
            eprintln!("identity written to {} (keep it secret)", out.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Point at the nodes' log, if they wrote any.
            if let Some(log) = log_hint.filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
            {
                eprintln!("every node's log: {}", log.display());
            }
            ExitCode::FAILURE
        }
    }
}
