//! `hpchain`: the node daemon, a local dev cluster, and the admin CLI.

mod admin;
mod chain;
mod chain_bench;
mod client;
mod dev;
mod iscsi;
mod iscsi_admin;
mod scrub;
mod snap;
mod table;
mod transfer;
mod units;
mod wallet;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use client::{ApiClient, CallError};

/// Every write moves 4 KiB buffers through several threads (gRPC, the Raft
/// loop, the store); glibc's allocator spent about 7% of a loaded node's
/// CPU on them (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hpchain",
    version,
    about = "Distributed block storage with a verifiable ledger"
)]
struct Cli {
    /// Management API of any node.
    #[arg(
        long,
        global = true,
        env = "HPCHAIN_API",
        default_value = "http://127.0.0.1:9400"
    )]
    api: String,
    /// API bearer token (default: read from --token-file).
    #[arg(long, global = true, env = "HPCHAIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the API token.
    #[arg(
        long,
        global = true,
        env = "HPCHAIN_TOKEN_FILE",
        default_value = "hpchain-data/api-token"
    )]
    token_file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run a node daemon.
    Node {
        /// TOML config file (see docs/operations.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local cluster (three nodes by default) on loopback with pool `rbd` and volume `demo`.
    Dev {
        #[arg(long, default_value = "hpchain-data")]
        data_dir: PathBuf,
        /// API port of node 1; node N uses base + 10*(N-1), its gRPC port + 1.
        #[arg(long, default_value_t = 9400)]
        base_port: u16,
        /// iSCSI port of node 1; node N uses base + 10*(N-1).
        #[arg(long, default_value_t = 3260)]
        iscsi_base_port: u16,
        /// Nodes to run, 3 to 9; each is an HP chain delegate candidate.
        /// With 4 or more delegates, blocks still become final while one
        /// node is down.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
        nodes: u64,
        /// Delegate seats (default: one per node, or what the data
        /// directory's genesis says). Fewer than --nodes leaves the last
        /// nodes candidates outside the set until votes elect them.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=9))]
        delegates: Option<u64>,
        /// Object data I/O: auto (io_uring where it can be set up), io_uring
        /// or positional.
        #[arg(long, default_value = "auto", value_parser = parse_object_io)]
        object_io: hpchain_engine::store::file_io::FileIoKind,
        /// Seconds a node may be down before its placement groups are
        /// re-replicated on the other nodes (at least 5).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..))]
        out_after: u64,
        /// Milliseconds between the nodes' syncs of applied object data
        /// (the Raft log holds it durably meanwhile).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(hpchain_engine::daemon::config::APPLIED_SYNC_MS_RANGE))]
        applied_sync_ms: u64,
    },
    /// Cluster status.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Placement groups.
    Pg {
        #[command(subcommand)]
        command: PgCommand,
    },
    /// Pools.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Volumes.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Snapshots of volumes: VOLUME@SNAPSHOT.
    Snap {
        #[command(subcommand)]
        command: SnapCommand,
    },
    /// Supply-chain traceability records on the HP chain.
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
    /// The HP chain: status, blocks, inclusion proofs, verification.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Audit records of cluster map changes, as kept on the HP chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Every audit record: time, node, action, target, block, finality, tx.
    Ls {
        /// Only records of this volume.
        #[arg(long, conflicts_with = "target")]
        volume: Option<String>,
        /// Only records of this target (pool/NAME, node/ID, volume/NAME).
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Record a supply-chain event for a batch.
    Add {
        #[arg(long)]
        batch: String,
        /// farm, processing, cold-storage, logistics, retail, or any name.
        #[arg(long)]
        stage: String,
        #[arg(long)]
        actor: String,
        #[arg(long)]
        place: String,
        /// NAME=VALUE+UNIT, e.g. temperature=4.5C (repeatable).
        #[arg(long = "reading")]
        readings: Vec<String>,
        /// A batch this one was made from (repeatable).
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// blake3 hex digest of an attached document (repeatable).
        #[arg(long = "document")]
        documents: Vec<String>,
    },
    /// A batch's final events, upstream and downstream batches.
    Show { batch: String },
    /// The batch and every batch it was made from, each event with its tx.
    Upstream {
        batch: String,
        /// Declared range NAME:MIN:MAX:UNIT, e.g. temperature:0:4:C; readings
        /// outside it are flagged (repeatable).
        #[arg(long = "range")]
        ranges: Vec<String>,
    },
    /// The batch and every batch made from it (the recall set).
    Downstream {
        batch: String,
        /// Declared range NAME:MIN:MAX:UNIT, e.g. temperature:0:4:C; readings
        /// outside it are flagged (repeatable).
        #[arg(long = "range")]
        ranges: Vec<String>,
    },
}

/// How a wallet command signs and follows its transaction.
#[derive(clap::Args)]
struct SignArgs {
    /// Key file of the sending account (`hpchain chain keygen`; a dev
    /// cluster's holder keys are DATA/chain/alloc-*.key.json). It is read
    /// here; only the signed transaction goes to the node.
    #[arg(long)]
    key: PathBuf,
    /// Wait until the transaction is final.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    wait_timeout: u64,
}

impl SignArgs {
    fn signing(&self) -> wallet::Signing<'_> {
        wallet::Signing {
            key: &self.key,
            wait: self.wait,
            wait_timeout: std::time::Duration::from_secs(self.wait_timeout),
        }
    }
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Head, final block, the current round's delegates, candidates and votes.
    Status,
    /// Make a key pair for an account, written to FILE (mode 0600).
    Keygen { file: PathBuf },
    /// An account's balance, next nonce, votes and candidacy.
    Account {
        /// Public key (hex) or key file.
        key: String,
    },
    /// Send HP from the --key account, signed here.
    Transfer {
        #[command(flatten)]
        sign: SignArgs,
        /// Recipient: public key (hex) or key file.
        to: String,
        /// HP, with at most 8 decimals (e.g. 12.5).
        amount_hp: String,
    },
    /// Vote with the --key account's whole balance for each candidate
    /// named (replacing its earlier votes); the delegate set follows the
    /// votes from the next round on.
    Vote {
        #[command(flatten)]
        sign: SignArgs,
        /// Candidates: public keys (hex) or key files.
        #[arg(required_unless_present = "withdraw")]
        candidates: Vec<String>,
        /// Withdraw every vote instead.
        #[arg(long, conflicts_with = "candidates")]
        withdraw: bool,
    },
    /// Register the --key account as a delegate candidate.
    Register {
        #[command(flatten)]
        sign: SignArgs,
        /// The candidate's name (1 to 64 bytes).
        name: String,
    },
    /// Final audit records of a target (volume/NAME, pool/NAME, node/ID).
    Audit { target: String },
    /// Re-check the whole ledger; names the first block that fails. The
    /// node then serves and builds nothing from a damaged block and, with
    /// auto_repair (the default), repairs it from peers.
    Verify {
        /// Check a stopped node's ledger on disk instead of asking a node:
        /// the node's data directory (or its `chain` directory).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Verify this node's ledger and repair what is damaged (blocks from
    /// peers, whose copies must hash to what this node made final).
    Repair,
    /// Load generator: submit trace records at a fixed rate through one or
    /// more nodes' APIs, follow them to finality, and verify their proofs.
    Bench {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Records per second, over all targets.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Records per request (at most 10,000).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Node API URLs to spread the load over (default: --api).
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
    },
    /// Blocks of the best chain (the latest ones, or from a height).
    Blocks {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// One block, by height or id, with its transactions.
    Show { id: String },
    /// The inclusion proof of a transaction, as a self-contained JSON file.
    Proof {
        /// Transaction id (hex), as `hpchain audit ls` shows it.
        tx: String,
        /// Write the proof here instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Verify a proof file offline, with only the delegates' keys.
    VerifyProof {
        file: PathBuf,
        /// Trusted delegate keys: hex, comma separated, or a file holding
        /// them (a genesis.json file gives its initial delegates).
        #[arg(long, required_unless_present = "genesis", conflicts_with = "genesis")]
        delegates: Option<String>,
        /// The chain's genesis.json: trust its initial delegates and check
        /// that the proof is for this chain.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// For a snapshot anchor: also check that this image file (e.g.
        /// from `hpchain volume export VOL@SNAP`) is the anchored snapshot.
        #[arg(long)]
        image: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Epoch, map leader, nodes and placement group states.
    Status,
}

#[derive(Subcommand)]
enum PgCommand {
    /// Every placement group: state, leader, replicas and their lag.
    Ls {
        #[arg(long)]
        pool: Option<String>,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Create a pool.
    Create {
        name: String,
        #[arg(long, default_value_t = 3)]
        size: u32,
        #[arg(long, default_value_t = 2)]
        min_size: u32,
        #[arg(long, default_value_t = 64)]
        pg_num: u32,
        /// disk, host, rack or zone.
        #[arg(long, default_value = "host")]
        failure_domain: String,
        #[arg(long, default_value = "4M")]
        object_size: String,
    },
    /// List pools.
    Ls,
    /// Show a pool with its capacity (asks every node for its disks).
    Info { name: String },
    /// Delete an empty pool.
    Rm { name: String },
    /// Show or set the QoS default of the pool's volumes (those that set no
    /// limit of their own).
    Qos {
        name: String,
        #[command(flatten)]
        limits: QosArgs,
    },
}

#[derive(Subcommand)]
enum SnapCommand {
    /// Take a crash-consistent snapshot (instant, whatever the size).
    Create {
        spec: String,
    },
    /// List a volume's snapshots.
    Ls {
        volume: String,
        /// Also count exclusive and shared bytes (reads every object's versions).
        #[arg(long)]
        usage: bool,
    },
    /// Remove a snapshot and free what only it held.
    Rm {
        spec: String,
    },
    /// Put the volume back as the snapshot saw it (with progress).
    Rollback {
        spec: String,
    },
    /// Record the snapshot's content digest on the HP chain (reads it all),
    /// so an image exported later can be proven identical
    /// (`hpchain chain verify-proof --image`).
    Anchor {
        spec: String,
    },
    /// Refuse removal of the snapshot until unprotected.
    Protect {
        spec: String,
    },
    Unprotect {
        spec: String,
    },
}

/// QoS limits, each `RATE[:BURST[:SECONDS]]` (`0` lifts it); bytes take
/// binary units (50M = 50 MiB/s). Limits not named keep their value.
#[derive(clap::Args)]
struct QosArgs {
    /// Total IOPS (reads and writes).
    #[arg(long)]
    iops: Option<String>,
    #[arg(long)]
    read_iops: Option<String>,
    #[arg(long)]
    write_iops: Option<String>,
    /// Total bytes per second.
    #[arg(long)]
    bps: Option<String>,
    #[arg(long)]
    read_bps: Option<String>,
    #[arg(long)]
    write_bps: Option<String>,
    /// Lift every limit first.
    #[arg(long)]
    clear: bool,
}

impl From<QosArgs> for snap::QosFlags {
    fn from(a: QosArgs) -> snap::QosFlags {
        snap::QosFlags {
            iops: a.iops,
            read_iops: a.read_iops,
            write_iops: a.write_iops,
            bps: a.bps,
            read_bps: a.read_bps,
            write_bps: a.write_bps,
            clear: a.clear,
        }
    }
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Create a thin volume.
    Create {
        name: String,
        #[arg(long)]
        pool: String,
        /// Size with a unit: 10G, 512M.
        #[arg(long)]
        size: String,
        #[arg(long, default_value_t = 512)]
        block_size: u32,
        #[command(flatten)]
        limits: QosArgs,
    },
    /// List volumes.
    Ls,
    /// Show a volume.
    Info { name: String },
    /// Grow a volume (iSCSI initiators see CAPACITY DATA HAS CHANGED), or
    /// shrink it with --allow-shrink.
    Resize {
        name: String,
        #[arg(long)]
        size: String,
        /// Allow a smaller size: the tail is discarded (snapshots keep it).
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Create a writable clone of a snapshot, instantly: VOLUME@SNAPSHOT NEW.
    Clone { spec: String, name: String },
    /// Copy what a clone still shares with its parent, then cut the link.
    Flatten { name: String },
    /// Check every block of every replica against its recorded crc32c and
    /// repair bad ones from another replica (exit 1 if one cannot be).
    Scrub { name: String },
    /// The clones of a snapshot.
    Children { spec: String },
    /// Show or set a volume's QoS limits, live.
    Qos {
        name: String,
        #[command(flatten)]
        limits: QosArgs,
    },
    /// Delete a volume.
    Rm { name: String },
    /// Discard (zero and release) a byte range.
    Discard {
        name: String,
        #[arg(long, default_value = "0")]
        offset: String,
        #[arg(long)]
        length: String,
    },
    /// Run a load inside a node through the volume client (overwrites data).
    Bench {
        name: String,
        /// randwrite, randread, write or read.
        #[arg(long, default_value = "randwrite")]
        pattern: String,
        #[arg(long, default_value = "4K")]
        block_size: String,
        #[arg(long, default_value_t = 32)]
        queue_depth: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// write or read: stop after one pass over the volume (within
        /// --seconds), e.g. to fill it before reads.
        #[arg(long)]
        once: bool,
    },
    /// Copy a file into a volume (from byte 0), with progress.
    Import { file: String, volume: String },
    /// Copy a whole volume or snapshot (VOLUME@SNAPSHOT) into a file, with progress.
    Export { volume: String, file: String },
    /// Export a volume, or a snapshot (VOLUME@SNAPSHOT, read-only), over
    /// iSCSI on every node's portal (or change the export's CHAP and ACL
    /// settings).
    ExportIscsi {
        name: String,
        /// CHAP user initiators must log in as (with --chap-secret).
        #[arg(long, requires = "chap_secret")]
        chap_user: Option<String>,
        /// CHAP secret, 12 or more characters.
        #[arg(long, requires = "chap_user", env = "HPCHAIN_CHAP_SECRET")]
        chap_secret: Option<String>,
        /// The target's user for mutual CHAP.
        #[arg(long, requires_all = ["mutual_chap_secret", "chap_user"])]
        mutual_chap_user: Option<String>,
        #[arg(
            long,
            requires = "mutual_chap_user",
            env = "HPCHAIN_MUTUAL_CHAP_SECRET"
        )]
        mutual_chap_secret: Option<String>,
        /// An initiator IQN allowed to log in (repeat; none allows any).
        #[arg(long = "allow")]
        allow: Vec<String>,
        #[arg(long)]
        read_only: bool,
    },
    /// Stop exporting a volume over iSCSI (drops its sessions).
    #[command(alias = "unexport")]
    UnexportIscsi { name: String },
    /// Show iSCSI exports: one volume's, or all of them.
    Iscsi { name: Option<String> },
}

fn parse_object_io(text: &str) -> Result<hpchain_engine::store::file_io::FileIoKind, String> {
    use hpchain_engine::store::file_io::FileIoKind;
    match text {
        "auto" => Ok(FileIoKind::Auto),
        "io_uring" => Ok(FileIoKind::IoUring),
        "positional" => Ok(FileIoKind::Positional),
        other => Err(format!("{other:?}: use auto, io_uring or positional")),
    }
}

fn api_token(cli: &Cli) -> Option<String> {
    cli.token.clone().or_else(|| {
        std::fs::read_to_string(&cli.token_file)
            .ok()
            .map(|t| t.trim().to_string())
    })
}

fn api_client(cli: &Cli) -> ApiClient {
    ApiClient::new(&cli.api, api_token(cli))
}

fn run_node(config: PathBuf) -> Result<(), String> {
    let config = hpchain_engine::daemon::DaemonConfig::load(&config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        hpchain_engine::daemon::run_with(config, shutdown, vec![iscsi::portal_extension()])
            .await
            .map_err(|e| e.to_string())
    })
}

fn run(cli: Cli) -> Result<(), String> {
    let admin = |result: Result<(), CallError>| result.map_err(|e| e.to_string());
    let api = api_client(&cli);
    let (api_url, token) = (cli.api.clone(), api_token(&cli));
    let json = cli.json;
    match cli.command {
        Top::Node { config } => run_node(config),
        Top::Dev {
            data_dir,
            base_port,
            iscsi_base_port,
            nodes,
            delegates,
            object_io,
            out_after,
            applied_sync_ms,
        } => dev::run(dev::DevOptions {
            data_dir,
            base_port,
            iscsi_base_port,
            nodes,
            delegates,
            object_io,
            out_after_secs: out_after,
            applied_sync_ms,
        }),
        Top::Cluster {
            command: ClusterCommand::Status,
        } => admin(admin::cluster_status(&api, json)),
        Top::Pg {
            command: PgCommand::Ls { pool },
        } => admin(admin::pg_ls(&api, pool.as_deref(), json)),
        Top::Pool { command } => admin(match command {
            PoolCommand::Create {
                name,
                size,
                min_size,
                pg_num,
                failure_domain,
                object_size,
            } => admin::pool_create(
                &api,
                admin::PoolSpec {
                    name,
                    size,
                    min_size,
                    pg_num,
                    failure_domain,
                    object_size,
                },
                json,
            ),
            PoolCommand::Ls => admin::pool_ls(&api, json),
            PoolCommand::Info { name } => admin::pool_info(&api, &name, json),
            PoolCommand::Qos { name, limits } => snap::pool_qos(&api, &name, limits.into(), json),
            PoolCommand::Rm { name } => admin::pool_rm(&api, &name),
        }),
        Top::Volume { command } => admin(match command {
            VolumeCommand::Create {
                name,
                pool,
                size,
                block_size,
                limits,
            } => snap::qos_body(limits.into()).and_then(|qos| {
                admin::volume_create(&api, &name, &pool, &size, block_size, qos, json)
            }),
            VolumeCommand::Ls => admin::volume_ls(&api, json),
            VolumeCommand::Info { name } => admin::volume_info(&api, &name, json),
            VolumeCommand::Resize {
                name,
                size,
                allow_shrink,
            } => admin::volume_resize(&api, &name, &size, allow_shrink, json),
            VolumeCommand::Clone { spec, name } => snap::clone(&api, &spec, &name, json),
            VolumeCommand::Flatten { name } => snap::flatten(&api, &name),
            VolumeCommand::Scrub { name } => scrub::scrub(&api, &name, json),
            VolumeCommand::Children { spec } => snap::children(&api, &spec, json),
            VolumeCommand::Qos { name, limits } => {
                snap::volume_qos(&api, &name, limits.into(), json)
            }
            VolumeCommand::Rm { name } => admin::volume_rm(&api, &name),
            VolumeCommand::Discard {
                name,
                offset,
                length,
            } => admin::volume_discard(&api, &name, &offset, &length),
            VolumeCommand::Bench {
                name,
                pattern,
                block_size,
                queue_depth,
                seconds,
                once,
            } => admin::volume_bench(
                &api,
                &name,
                &admin::BenchArgs {
                    pattern,
                    block_size,
                    queue_depth,
                    seconds,
                    once,
                },
                json,
            ),
            VolumeCommand::Import { file, volume } => transfer::import(&api, &file, &volume),
            VolumeCommand::Export { volume, file } => transfer::export(&api, &volume, &file),
            VolumeCommand::ExportIscsi {
                name,
                chap_user,
                chap_secret,
                mutual_chap_user,
                mutual_chap_secret,
                allow,
                read_only,
            } => iscsi_admin::export(
                &api,
                &name,
                iscsi_admin::ExportSpec {
                    chap_user,
                    chap_secret,
                    mutual_chap_user,
                    mutual_chap_secret,
                    allowed_initiators: allow,
                    read_only,
                },
                json,
            ),
            VolumeCommand::UnexportIscsi { name } => iscsi_admin::unexport(&api, &name),
            VolumeCommand::Iscsi { name } => iscsi_admin::show(&api, name.as_deref(), json),
        }),
        Top::Snap { command } => admin(match command {
            SnapCommand::Create { spec } => snap::create(&api, &spec, json),
            SnapCommand::Ls { volume, usage } => snap::ls(&api, &volume, usage, json),
            SnapCommand::Rm { spec } => snap::rm(&api, &spec),
            SnapCommand::Rollback { spec } => snap::rollback(&api, &spec),
            SnapCommand::Protect { spec } => snap::protect(&api, &spec, true),
            SnapCommand::Anchor { spec } => snap::anchor(&api, &spec, json),
            SnapCommand::Unprotect { spec } => snap::protect(&api, &spec, false),
        }),
        Top::Trace { command } => admin(match command {
            TraceCommand::Add {
                batch,
                stage,
                actor,
                place,
                readings,
                inputs,
                documents,
            } => admin::trace_add(
                &api,
                admin::TraceSpec {
                    batch,
                    stage,
                    actor,
                    place,
                    readings,
                    inputs,
                    documents,
                },
                json,
            ),
            TraceCommand::Show { batch } => admin::trace_show(&api, &batch, json),
            TraceCommand::Upstream { batch, ranges } => {
                chain::trace_walk(&api, &batch, "upstream", &ranges, json)
            }
            TraceCommand::Downstream { batch, ranges } => {
                chain::trace_walk(&api, &batch, "downstream", &ranges, json)
            }
        }),
        Top::Chain { command } => admin(match command {
            ChainCommand::Status => admin::chain_status(&api, json),
            ChainCommand::Keygen { file } => wallet::keygen(&file, json),
            ChainCommand::Account { key } => wallet::account(&api, &key, json),
            ChainCommand::Transfer {
                sign,
                to,
                amount_hp,
            } => wallet::transfer(&api, &sign.signing(), &to, &amount_hp, json),
            ChainCommand::Vote {
                sign,
                candidates,
                withdraw: _,
            } => wallet::vote(&api, &sign.signing(), &candidates, json),
            ChainCommand::Register { sign, name } => {
                wallet::register(&api, &sign.signing(), &name, json)
            }
            ChainCommand::Audit { target } => admin::chain_audit(&api, &target, json),
            ChainCommand::Verify { data_dir: None } => admin::chain_verify(&api, json),
            ChainCommand::Verify {
                data_dir: Some(dir),
            } => chain::verify_offline(&dir, json),
            ChainCommand::Repair => admin::chain_repair(&api, json),
            ChainCommand::Bench {
                seconds,
                rate,
                batch,
                targets,
            } => chain_bench::run(
                &chain_bench::BenchOptions {
                    targets: if targets.is_empty() {
                        vec![api_url]
                    } else {
                        targets
                    },
                    token,
                    seconds,
                    rate,
                    batch,
                },
                json,
            ),
            ChainCommand::Blocks { from, limit } => chain::blocks(&api, from, limit, json),
            ChainCommand::Show { id } => chain::show(&api, &id, json),
            ChainCommand::Proof { tx, output } => chain::proof(&api, &tx, output.as_deref(), json),
            ChainCommand::VerifyProof {
                file,
                delegates,
                genesis,
                image,
            } => {
                let trust = match (delegates, genesis) {
                    (Some(keys), _) => chain::Trust::Keys(keys),
                    (None, Some(path)) => chain::Trust::Genesis(path),
                    (None, None) => unreachable!("clap requires --delegates or --genesis"),
                };
                chain::verify_proof(&file, &trust, image.as_deref(), json)
            }
        }),
        Top::Audit {
            command: AuditCommand::Ls { volume, target },
        } => admin(chain::audit_ls(
            &api,
            volume.as_deref(),
            target.as_deref(),
            json,
        )),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Top::Node { .. } | Top::Dev { .. }) {
        // A one-shot command piped into `head` ends quietly, as Unix tools
        // do, instead of panicking on the closed pipe. The daemons keep
        // Rust's default (ignored), their sockets must not kill them.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpchain: {e}");
            ExitCode::FAILURE
        }
    }
}
