//! Starting and stopping the whole stack in one process: storage, fixtures,
//! the app-server (and, later, the broker). `imctl serve` and the tests share it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app_server::media::Blobs;
use crate::app_server::qr::QrBook;
use crate::app_server::sms::SmsBook;
use crate::app_server::{self, AppState, Inner};
use crate::broker::route::{Node, Routes};
use crate::broker::{self, Broker, BrokerOptions};
use crate::client::app::{Failure, exit};
use crate::cluster::{self, Cluster};
use crate::config::ServeConfig;
use crate::http::advertise::Advertise;
use crate::store::{self, Fixtures, Location, Store};
use crate::telemetry::Telemetry;
use crate::token::{ImTokens, random_token};

/// A running stack.
pub struct Running {
    pub app_addr: SocketAddr,
    pub broker_addr: SocketAddr,
    /// The SQLite database file; `None` when ephemeral or on PostgreSQL.
    pub database: Option<PathBuf>,
    /// Which store is in use, as the banner shows it (a password masked).
    pub store_label: String,
    /// Whether this start seeded a fresh database.
    pub seeded: bool,
    /// Whether this start loaded a snapshot (`--import`).
    pub imported: bool,
    pub state: AppState,
    pub broker: Broker,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    broker_server: JoinHandle<std::io::Result<()>>,
    writer: JoinHandle<()>,
    /// `--export-on-exit`: where `wait` writes a snapshot.
    export_on_exit: Option<PathBuf>,
    /// `--shutdown-timeout`: how long clients may hold up a shutdown.
    shutdown_timeout: Duration,
}

impl Running {
    pub fn app_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// Asks the stack to stop; `wait` finishes the job.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the servers have stopped (after a shutdown request), then
    /// closes the database cleanly. Clients get `--shutdown-timeout` to
    /// finish (each listener drops what is left after it); the export, if
    /// asked for, is written whatever they did.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("the app-server task panicked")?;
        let brokered = self
            .broker_server
            .await
            .context("the broker task panicked")?;
        // The writer commits whatever was queued before the database closes.
        self.writer.await.context("the broker's writer panicked")?;
        // The listeners drained within --shutdown-timeout; what is left
        // (connections' last acks, closing the database) shares one more.
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        // Connections write the acks of that last batch before their 1001.
        let _ = tokio::time::timeout_at(deadline, self.broker.connections_closed()).await;
        // Everything acknowledged is committed now, and nothing more can come.
        let exported = match &self.export_on_exit {
            Some(path) => export_to(&self.state.store, path).await.inspect_err(|e| {
                tracing::error!("--export-on-exit failed: {e:#}");
            }),
            None => Ok(()),
        };
        // A task still holding a database connection (a WebSocket that has
        // not closed yet) must not hold up the exit.
        if tokio::time::timeout_at(deadline, self.state.store.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "the database did not close within the shutdown timeout; exiting anyway"
            );
        }
        served.context("the app-server failed")?;
        brokered.context("the broker failed")?;
        exported
    }

    pub fn broker_url(&self) -> String {
        self.state.broker_url.clone()
    }

    /// Requests shutdown and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Binds `host:port`, explaining a taken port in terms of the flag to change.
async fn bind(addr: SocketAddr, flag: &str, env: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            let by = match crate::port_owner::find(addr.port()) {
                Some((pid, cmd)) if cmd.contains("imctl") => {
                    format!("by another imctl (pid {pid}: {cmd}); stop it (kill {pid}) or")
                }
                Some((pid, cmd)) => format!("by pid {pid} ({cmd}); stop it or"),
                None => "(is another `imctl serve` running? `imctl status` tells);".to_owned(),
            };
            anyhow::anyhow!(
                "port {} on {} is already in use {by} choose another port with {flag} PORT or {env}, or 0 for any free port",
                addr.port(),
                addr.ip()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot listen on {addr}"))
        }
    })
}

/// Writes a snapshot of `store` to `path` (atomically).
async fn export_to(store: &Store, path: &std::path::Path) -> anyhow::Result<()> {
    let snapshot = store
        .export()
        .await
        .with_context(|| format!("cannot read the data to export to {}", path.display()))?;
    let file = path.to_owned();
    let summary = store::snapshot::summary(&snapshot);
    tokio::task::spawn_blocking(move || store::snapshot::write(&file, &snapshot))
        .await
        .context("the snapshot writer panicked")??;
    tracing::info!(file = %path.display(), "exported {summary}");
    Ok(())
}

/// `--data-dir` (or the platform's default), created private if missing.
fn data_dir(config: &ServeConfig) -> anyhow::Result<PathBuf> {
    let dir = config
        .data_dir
        .clone()
        .unwrap_or_else(store::default_data_dir);
    store::create_private_dir(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(dir)
}

/// Opens storage, seeds it (or imports a snapshot), binds the ports and
/// starts serving.
pub async fn start(config: &ServeConfig) -> anyhow::Result<Running> {
    // A setting that cannot work is a usage error (exit 2), like a bad flag.
    config
        .check()
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    if let Some(path) = &config.export_on_exit {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            anyhow::bail!(
                "--export-on-exit {}: the directory {} does not exist",
                path.display(),
                dir.expect("checked").display()
            );
        }
    }
    // A bad snapshot file fails before anything is created.
    let snapshot = match &config.import {
        Some(path) => Some(store::snapshot::load(path)?),
        None => None,
    };
    let listener = bind(
        SocketAddr::new(config.host, config.app_port),
        "--app-port",
        "IMCTL_APP_PORT",
    )
    .await?;
    let app_addr = listener.local_addr()?;
    let broker_listener = bind(
        SocketAddr::new(config.host, config.broker_port),
        "--broker-port",
        "IMCTL_BROKER_PORT",
    )
    .await?;
    let broker_addr = broker_listener.local_addr()?;

    let location = match (&config.database, config.ephemeral) {
        (_, true) => Location::Memory,
        (Some(value), false) => Location::parse(value)
            .map_err(|why| Failure::new(exit::USAGE, format!("--database: {why}")))?,
        (None, false) => Location::File(store::database_path(&data_dir(config)?)),
    };
    // Uploads live in a directory: beside a SQLite file, in the data
    // directory with PostgreSQL, in memory when ephemeral.
    let (database, media_dir) = match &location {
        Location::Memory => (None, None),
        Location::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                store::create_private_dir(dir).with_context(|| {
                    format!("cannot create the database's directory {}", dir.display())
                })?;
            }
            let dir = path
                .parent()
                .map_or_else(|| PathBuf::from("media"), |d| d.join("media"));
            (Some(path.clone()), Some(dir))
        }
        Location::Postgres(_) => (None, Some(data_dir(config)?.join("media"))),
    };
    let store_label = location.display();
    let store = Store::open(&location)
        .await
        .map_err(|e| match e.open_problem(&location) {
            Some((problem, line)) => anyhow::Error::new(Failure::new(
                match problem {
                    store::OpenProblem::Settings => exit::USAGE,
                    store::OpenProblem::Unreachable => exit::UNREACHABLE,
                },
                line,
            )),
            None => {
                anyhow::Error::new(e).context(format!("cannot open the database ({store_label})"))
            }
        })?;
    if let (Some(snapshot), Some(path)) = (&snapshot, &config.import) {
        if !store
            .import(snapshot)
            .await
            .with_context(|| format!("cannot import {}", path.display()))?
        {
            anyhow::bail!(
                "cannot import {}: the database {} already has data; --import loads a snapshot only into a new database: \
                 use --ephemeral, or a --data-dir that does not exist yet",
                path.display(),
                store_label,
            );
        }
        tracing::info!(file = %path.display(), "imported {}", store::snapshot::summary(snapshot));
    }
    // An imported snapshot replaces the fixtures.
    let fixtures = match (&config.fixtures, config.no_fixtures || snapshot.is_some()) {
        (_, true) => None,
        (Some(path), false) => Some(Fixtures::load(path)?),
        (None, false) => Some(Fixtures::builtin()),
    };
    let seeded = match &fixtures {
        Some(f) => store
            .seed_once(f)
            .await
            .context("cannot seed the fixtures")?,
        None => false,
    };
    let secret = store
        .setting_or_insert("im_token_secret", &random_token(32))
        .await?;

    let shutdown = CancellationToken::new();
    let im_tokens = ImTokens::new(secret.as_bytes(), config.token_ttl);
    let advertise = Advertise::new(
        config.host,
        config.advertise_host.as_deref(),
        app_addr.port(),
        broker_addr.port(),
    );
    let public = advertise.default_urls();
    // This node is reached by whichever host the client reached us by.
    let node = Node {
        name: config.node.clone(),
        host: None,
        port: broker_addr.port(),
    };
    let files = crate::rlimit::raise_nofile();
    let max_connections =
        crate::http::listen::fit_connections(config.max_connections as usize, files);
    if max_connections < config.max_connections as usize {
        tracing::warn!(
            "--max-connections {} does not fit the open-file limit (ulimit -n); serving at most {max_connections} per port",
            config.max_connections
        );
    }
    let max_websockets =
        crate::http::listen::fit_websockets(config.max_websockets as usize, files, max_connections);
    if max_websockets < config.max_websockets as usize {
        tracing::warn!(
            "--max-websockets {} does not fit the open-file limit (ulimit -n); holding at most {max_websockets}",
            config.max_websockets
        );
    }
    let origins = std::sync::Arc::new(crate::http::cors::Origins::new(
        &config.cors_origin,
        !config.host.is_loopback(),
    ));
    let telemetry = match config.nats {
        Some(_) => Telemetry::for_node(&config.node),
        None => Telemetry::default(),
    };
    let faults = crate::fault::Faults::new(telemetry.metrics.clone());
    for rule in &config.fault {
        faults
            .add(rule.clone())
            .map_err(|e| Failure::new(exit::USAGE, format!("--fault {rule}: {e}")))?;
    }
    let cluster = match &config.nats {
        Some(url) => Some(
            join_cluster(
                config,
                url,
                broker_addr.port(),
                public.app_server(),
                &shutdown,
            )
            .await?,
        ),
        None => None,
    };
    let (broker, writer) = Broker::new(
        store.clone(),
        im_tokens.clone(),
        BrokerOptions {
            routes: Routes::new(config.route_strategy, node, cluster.clone()),
            node: config.node.clone(),
            cluster: cluster.clone(),
            max_frame: config.max_frame as usize,
            idle_timeout: config.idle_timeout,
            connect_timeout: config.connect_timeout,
            write_timeout: config.write_timeout,
            queue_bytes: config.queue_bytes as usize,
            max_connections_per_user: config.max_connections_per_user as usize,
            max_websockets,
            origins: origins.clone(),
            friends_only: config.friends_only,
            advertise: advertise.clone(),
            faults: faults.clone(),
        },
        telemetry.clone(),
        shutdown.clone(),
    );
    broker::spawn_robot(broker.clone()).await?;
    let rate_limited = !config.no_rate_limits;
    let blobs = match media_dir {
        Some(dir) => Blobs::disk(dir.clone(), config.media_quota())
            .with_context(|| format!("cannot read the media directory {}", dir.display()))?,
        None => Blobs::memory(config.media_quota()),
    };
    let state = AppState::new(Inner {
        cluster: cluster.clone(),
        store,
        sms: SmsBook::new(config.sms_ttl, config.sms_interval, config.sms_max_attempts)
            .with_test_codes(config.sms_test_code.iter().cloned())
            .with_daily_limit(rate_limited.then_some(config.sms_per_mobile_per_day)),
        qr: QrBook::new(config.qr_ttl, config.qr_prefix.clone()).with_caps(
            config.max_qr_sessions as usize,
            config.max_qr_sessions_per_ip as usize,
        ),
        login_rate: rate_limited.then(|| {
            app_server::rate::Window::new(config.logins_per_ip_per_minute, Duration::from_secs(60))
        }),
        accounts: app_server::account::Accounts::new(rate_limited),
        im_tokens,
        route_url: public.route_url(),
        super_code: config.super_code().map(str::to_owned),
        poll_timeout: config.poll_timeout,
        session_ttl: config.session_ttl,
        base_url: public.app_server(),
        advertise,
        session_cookie: app_server::cookie::cookie_name(app_addr.port()),
        blobs,
        max_upload: config.max_upload,
        telemetry,
        faults: faults.clone(),
        broker: std::sync::Arc::new(broker.clone()),
        admin_secret: config
            .admin_secret
            .clone()
            .unwrap_or_else(|| random_token(16)),
        shutdown: shutdown.clone(),
        started_at: crate::store::now_ms(),
        database: match &location {
            Location::Memory => None,
            Location::File(path) => Some(path.display().to_string()),
            Location::Postgres(_) => Some(store_label.clone()),
        },
        broker_url: public.broker(),
        exposed: !config.host.is_loopback(),
    });
    if let Some(cluster) = &cluster {
        share_login_state(&state, cluster, config).await?;
    }
    tokio::spawn(app_server::sweep(state.clone()));
    tokio::spawn(crate::fault::sweep(faults, shutdown.clone()));
    if database.is_some() {
        tokio::spawn(checkpoints(state.store.clone(), shutdown.clone()));
    }
    let openapi = crate::openapi::document(&state.base_url, &state.broker_url);
    let router = app_server::app(state.clone(), &origins, openapi);
    let limits = app_server::ConnLimits {
        http_timeout: config.http_timeout,
        max_connections,
        drain: config.shutdown_timeout,
    };
    let stop = shutdown.clone();
    let server = tokio::spawn(app_server::serve(listener, router, limits, async move {
        stop.cancelled().await
    }));
    let stop = shutdown.clone();
    let broker_server = tokio::spawn(app_server::serve(
        broker_listener,
        broker::app(broker.clone()),
        limits,
        async move { stop.cancelled().await },
    ));
    Ok(Running {
        app_addr,
        broker_addr,
        database,
        store_label,
        seeded,
        imported: snapshot.is_some(),
        state,
        broker,
        shutdown,
        server,
        broker_server,
        writer,
        export_on_exit: config.export_on_exit.clone(),
        shutdown_timeout: config.shutdown_timeout,
    })
}

/// Joins the cluster of `--nats`; an unreachable NATS or a taken node
/// name is one line and an exit code.
async fn join_cluster(
    config: &ServeConfig,
    url: &str,
    broker_port: u16,
    app_url: String,
    shutdown: &CancellationToken,
) -> anyhow::Result<Cluster> {
    let settings = cluster::Settings {
        url: url.to_owned(),
        node: config.node.clone(),
        host: config.advertise_host.clone(),
        broker_port,
        app_url,
    };
    Cluster::join(settings, shutdown.clone())
        .await
        .map_err(|e| {
            let code = match e {
                cluster::Error::NameTaken(_) => exit::USAGE,
                _ => exit::UNREACHABLE,
            };
            anyhow::Error::new(Failure::new(code, e.to_string()))
        })
}

/// Moves QR sessions and SMS codes into the cluster's buckets and keeps
/// this node's mirror and outbox fed from them.
async fn share_login_state(
    state: &AppState,
    cluster: &Cluster,
    config: &ServeConfig,
) -> anyhow::Result<()> {
    use crate::cluster::kv::Bucket;
    use futures_util::StreamExt;
    let unreachable = |e: cluster::Error| Failure::new(exit::UNREACHABLE, e.to_string());
    // Entries outlive their own expiry a little; the server drops them after.
    let qr = Bucket::open(cluster, "imctl_qr", config.qr_ttl + Duration::from_secs(60))
        .await
        .map_err(unreachable)?;
    let sms = Bucket::open(cluster, "imctl_sms", Duration::from_secs(25 * 3600))
        .await
        .map_err(unreachable)?;
    state.qr.share(qr.clone());
    state.sms.share(sms, cluster.clone());
    let mirror = state.clone();
    let stop = state.shutdown.clone();
    tokio::spawn(async move {
        // A watch that ends (NATS gone for good) is opened again.
        while !stop.is_cancelled() {
            match qr.watch().await {
                Ok(changes) => {
                    let mut changes = std::pin::pin!(changes.take_until(stop.cancelled()));
                    while let Some(change) = changes.next().await {
                        mirror.qr.apply(change);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the cluster's QR sessions; retrying")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    let mut outbox = cluster
        .subscribe(app_server::sms::OUTBOX_SUBJECT.into())
        .await
        .map_err(unreachable)?;
    let books = state.clone();
    tokio::spawn(async move {
        while let Some(msg) = outbox.next().await {
            if let Ok(entry) = serde_json::from_slice(&msg.payload) {
                books.sms.arrived(entry);
            }
        }
    });
    Ok(())
}

/// Checkpoints the WAL every 250 ms, off the writer's path.
async fn checkpoints(store: crate::store::Store, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        }
    }
}
