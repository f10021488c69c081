//! Command line: `serve`, `migrate`, `user ...`, `check-config`. This is the binary's edge,
//! where errors become `anyhow` messages and an exit status.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use filestore::client::credentials::Credentials;
use filestore::client::{transfer, Client};
use filestore::config::Config;
use filestore::meta::{store_redact_url, MetaStore};
use filestore::server::{self, Services};

#[derive(Parser)]
#[command(name = "filestore", version, about = "A cloud drive you can mount")]
struct Cli {
    /// Configuration file (TOML). Without one, the embedded default runs: SQLite and
    /// local content under the data dir.
    #[arg(short = 'c', long, env = "FILESTORE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory of the embedded default (overrides `data_dir`).
    #[arg(long, env = "FILESTORE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTP API (seed routes and /api/v1).
    Serve {
        /// Address to listen on (overrides `server.listen`).
        #[arg(long, env = "FILESTORE_LISTEN")]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Print the effective configuration (secrets redacted) and exit.
    CheckConfig,
    /// Sign in to a server and keep the token (in the config dir, mode 0600).
    Login {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long, env = "FILESTORE_SERVER")]
        server: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the session and forget the token.
    Logout,
    /// Upload a file: instant when the server has the content, else chunked and resumable.
    Upload {
        file: PathBuf,
        /// Remote path (a directory ending in `/` keeps the file name). Default: /NAME.
        remote: Option<String>,
        /// Chunks in flight.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Fail instead of replacing an existing remote file.
        #[arg(long)]
        no_overwrite: bool,
        /// Hash the whole file before sending anything (a large file is otherwise sent
        /// while it is hashed): content the server has then costs no bytes on the wire.
        #[arg(long)]
        hash_first: bool,
    },
    /// Download a file (resumes an interrupted download; verifies the SHA-1).
    Download { remote: String, local: Option<PathBuf> },
    /// List a remote directory.
    Ls {
        #[arg(default_value = "/")]
        remote: String,
        /// Sizes, dates and hashes.
        #[arg(short, long)]
        long: bool,
    },
    /// Create a remote directory.
    Mkdir {
        remote: String,
        #[arg(short, long)]
        parents: bool,
    },
    /// Move or rename a remote entry.
    Mv {
        from: String,
        to: String,
        /// Replace an existing destination (rename(2) rules).
        #[arg(short, long)]
        force: bool,
    },
    /// Delete a remote entry.
    Rm {
        remote: String,
        /// Delete a directory with everything in it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Transfer content to object storage: run a worker (RabbitMQ), or inspect the queue.
    Transfer {
        #[command(subcommand)]
        cmd: Option<TransferCmd>,
    },
    /// Run one housekeeping pass now: delete unreferenced content whose grace period is
    /// over, remove what crashes left in the staging area, purge expired tokens.
    Gc,
    /// Mount a user's tree (FUSE) in the foreground: `--server URL` over the HTTP API, or
    /// `-c CONFIG --user NAME` directly on a server. SIGINT/SIGTERM unmount.
    Mount(crate::cli_mount::MountArgs),
}

#[derive(Subcommand)]
enum TransferCmd {
    /// Consume transfer jobs until SIGTERM (the default).
    Run,
    /// Jobs by state, dead letters, and queue depths.
    Status,
    /// Requeue dead-lettered jobs (all of them, or those of the given SHA-1s).
    Retry { sha1: Vec<String> },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account (works even when sign-up is disabled).
    Add {
        name: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and end its sessions.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// List accounts.
    List,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("filestore: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("filestore: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FILESTORE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // journald stamps and colours nothing itself: give it plain lines without our timestamps.
    // Colours only on a terminal: a log file gets plain text, and styling the fields of
    // every request's span was 1.5 % of the server's CPU under small GETs.
    use std::io::IsTerminal;
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn load_config(cli: &Cli, listen: Option<&str>) -> Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref(), std::env::vars()).context("loading the configuration")?;
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.display().to_string();
    }
    if let Some(l) = listen {
        l.parse::<std::net::SocketAddr>()
            .with_context(|| format!("--listen `{l}` is not an address:port"))?;
        cfg.server.listen = l.to_string();
    }
    Ok(cfg)
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Serve { listen } => serve(load_config(&cli, listen.as_deref())?).await,
        Cmd::Migrate => {
            let cfg = load_config(&cli, None)?;
            Services::open(&cfg).await?;
            println!("database {} is up to date", store_redact_url(&cfg.database_url()));
            Ok(())
        }
        Cmd::CheckConfig => {
            let cfg = load_config(&cli, None)?;
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Cmd::User { cmd } => user(load_config(&cli, None)?, cmd).await,
        Cmd::Login {
            server,
            user,
            password_stdin,
        } => login(server, user, *password_stdin).await,
        Cmd::Logout => {
            if let Some(c) = Credentials::load()? {
                let client = Client::new(&c.server, Some(c.token))?;
                if let Err(e) = client.signout().await {
                    eprintln!("filestore: the server did not end the session ({e}); forgetting the token anyway");
                }
            }
            Credentials::remove()?;
            Ok(())
        }
        Cmd::Upload {
            file,
            remote,
            parallel,
            no_overwrite,
            hash_first,
        } => {
            let client = logged_in()?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let remote = match remote.as_deref() {
                None => format!("/{name}"),
                Some(r) if r.ends_with('/') => format!("{r}{name}"),
                Some(r) => r.to_string(),
            };
            let done = transfer::upload(&client, file, &remote, !no_overwrite, *parallel, *hash_first).await?;
            println!(
                "{} {} bytes sha1 {}",
                done.entry.path,
                done.entry.size,
                done.entry.sha1.unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Download { remote, local } => {
            let client = logged_in()?;
            let local = match local {
                Some(l) if l.is_dir() => l.join(remote.rsplit('/').next().unwrap_or("download")),
                Some(l) => l.clone(),
                None => PathBuf::from(remote.rsplit('/').find(|s| !s.is_empty()).unwrap_or("download")),
            };
            let e = transfer::download(&client, remote, &local).await?;
            println!(
                "{} {} bytes sha1 {}",
                local.display(),
                e.size,
                e.sha1.unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Ls { remote, long } => {
            let client = logged_in()?;
            for e in client.list(remote).await? {
                let name = if e.is_dir() {
                    format!("{}/", e.name)
                } else {
                    e.name.clone()
                };
                if *long {
                    println!(
                        "{:>14} {} {:<40} {name}",
                        e.size,
                        e.mtime,
                        e.sha1.as_deref().unwrap_or("-")
                    );
                } else {
                    println!("{name}");
                }
            }
            Ok(())
        }
        Cmd::Mkdir { remote, parents } => {
            logged_in()?.mkdir(remote, *parents).await?;
            Ok(())
        }
        Cmd::Mv { from, to, force } => {
            logged_in()?.rename(from, to, *force).await?;
            Ok(())
        }
        Cmd::Rm { remote, recursive } => {
            logged_in()?.remove(remote, *recursive).await?;
            Ok(())
        }
        Cmd::Transfer { cmd } => transfer(load_config(&cli, None)?, cmd.as_ref().unwrap_or(&TransferCmd::Run)).await,
        Cmd::Mount(args) => crate::cli_mount::run(args, cli.config.as_deref(), cli.data_dir.as_deref()).await,
        Cmd::Gc => {
            let cfg = load_config(&cli, None)?;
            let s = Services::open(&cfg).await?;
            let p = s.housekeeping(&cfg).run_once().await?;
            println!(
                "collected {} contents, removed {} temp files, {} orphaned objects and {} abandoned chunked uploads, purged {} tokens",
                p.collected, p.temp_files, p.orphans, p.upload_parts, p.tokens
            );
            Ok(())
        }
    }
}

async fn transfer(cfg: Config, cmd: &TransferCmd) -> Result<()> {
    let s = Services::open(&cfg).await?;
    let t = s
        .transfers
        .clone()
        .context("no object storage configured ([s3] endpoint): nothing to transfer")?;
    match cmd {
        TransferCmd::Run => {
            if cfg.queue.amqp_url.is_empty() {
                bail!("no RabbitMQ configured ([queue] amqp_url): `filestore serve` transfers in-process");
            }
            // S3 being down is not a reason to stop: jobs fail, retry and dead-letter.
            if let Err(e) = t.s3.ensure_bucket().await {
                tracing::warn!(error = %e, "object storage unreachable; transfers will retry");
            }
            let (stop, rx) = tokio::sync::watch::channel(false);
            let worker = tokio::spawn(filestore::transfer::amqp::work(t, rx));
            println!("filestore: transfer worker running");
            shutdown_signal().await;
            let _ = stop.send(true);
            let _ = worker.await;
        }
        TransferCmd::Status => {
            for (state, n) in s.meta.job_counts().await? {
                println!("{state:>10} {n}");
            }
            if !cfg.queue.amqp_url.is_empty() {
                match filestore::transfer::amqp::queue_depths(&cfg.queue).await {
                    Ok((q, dlq)) => println!(
                        "queue {}: {q} messages; dead-letter queue {}: {dlq}",
                        cfg.queue.queue, cfg.queue.dead_letter_queue
                    ),
                    Err(e) => println!("queue: {e}"),
                }
            }
            for j in s.meta.jobs_in(filestore::meta::job_state::DEAD, 100).await? {
                println!(
                    "dead {} attempts={} error={}",
                    j.sha1,
                    j.attempts,
                    j.last_error.unwrap_or_default()
                );
            }
        }
        TransferCmd::Retry { sha1 } => {
            let n = s.meta.jobs_retry(sha1).await?;
            println!("requeued {n} jobs");
        }
    }
    s.meta.close().await;
    Ok(())
}

async fn login(server: &str, user: &str, password_stdin: bool) -> Result<()> {
    let password = read_password(password_stdin, false)?;
    let client = Client::new(server, None)?;
    let (token, expires) = client.signin(user, &password).await.context("signing in")?;
    let creds = Credentials {
        server: server.trim_end_matches('/').to_string(),
        user: user.to_string(),
        token,
        expires,
    };
    let path = creds.save().context("saving the token")?;
    println!(
        "signed in to {} as {user}; token kept in {} until {}",
        creds.server,
        path.display(),
        creds.expires
    );
    Ok(())
}

/// A client with the saved token.
fn logged_in() -> Result<Client> {
    let creds = Credentials::load()?.context("not signed in: run `filestore login --server URL --user NAME` first")?;
    Ok(Client::new(&creds.server, Some(creds.token))?)
}

async fn serve(cfg: Config) -> Result<()> {
    let data_dir = cfg.data_dir();
    let running = server::start(cfg).await?;
    println!(
        "filestore: data dir {}",
        std::fs::canonicalize(&data_dir).unwrap_or(data_dir).display()
    );
    println!("filestore: serving http://{}/", running.addr);
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn user(cfg: Config, cmd: &UserCmd) -> Result<()> {
    let services = Services::open(&cfg).await?;
    let accounts = &services.accounts;
    let meta: &MetaStore = &services.meta;
    match cmd {
        UserCmd::Add {
            name,
            admin,
            password_stdin,
        } => {
            let password = read_password(*password_stdin, true)?;
            accounts.create_user(name, &password, *admin).await?;
            println!("created user {name}{}", if *admin { " (admin)" } else { "" });
        }
        UserCmd::Passwd { name, password_stdin } => {
            let password = read_password(*password_stdin, true)?;
            accounts.set_password(name, &password).await?;
            println!("password of {name} changed");
        }
        UserCmd::Disable { name } => {
            meta.set_user_disabled(name, true).await?;
            println!("disabled {name}; their sessions ended");
        }
        UserCmd::Enable { name } => {
            meta.set_user_disabled(name, false).await?;
            println!("enabled {name}");
        }
        UserCmd::List => {
            for u in meta.list_users().await? {
                let flags = match (u.is_admin, u.disabled) {
                    (true, true) => " admin disabled",
                    (true, false) => " admin",
                    (false, true) => " disabled",
                    (false, false) => "",
                };
                println!("{}{flags}", u.name);
            }
        }
    }
    meta.close().await;
    Ok(())
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(pw);
    }
    let pw = rpassword::prompt_password("Password: ").context("reading the password")?;
    if confirm && rpassword::prompt_password("Repeat password: ").context("reading the password")? != pw {
        bail!("the passwords differ");
    }
    Ok(pw)
}
