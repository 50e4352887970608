//! `imctl bench`: load scenarios with a results table (or `--json`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::bench::{self, ChaosOpts, ChatOpts, ConnectOpts, GroupOpts, LoginOpts, Stack, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stack to load [default: http://127.0.0.1:8888 unless --spawn]
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        global = true,
        conflicts_with = "spawn"
    )]
    pub app_server: Option<String>,

    /// Start a stack of its own (`imctl serve` on free ports), stopped afterwards
    #[arg(long, global = true)]
    pub spawn: bool,

    /// With --spawn: keep everything in memory instead of a temp data dir
    #[arg(long, global = true, requires = "spawn", conflicts_with = "data_dir")]
    pub ephemeral: bool,

    /// With --spawn: the data directory [default: a temp dir, removed afterwards]
    #[arg(long, global = true, requires = "spawn")]
    pub data_dir: Option<PathBuf>,

    /// The server's super code, used to log the bench users in
    #[arg(long, global = true, default_value = "66666")]
    pub super_code: String,

    /// Print the results as one JSON object
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// 1:1 chat: sender/receiver pairs; throughput, loss, send→ack and send→delivery latency
    Chat {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Sends in flight per sender (closed loop)
        #[arg(long, default_value_t = 64)]
        window: u32,
        /// Total messages per second (open loop) instead of a window
        #[arg(long, conflicts_with = "kill_every")]
        rate: Option<f64>,
        /// Chaos: SIGKILL the spawned server this often and restart it on the
        /// same data dir under load; at the end every acked message must be in
        /// the receivers' sync exactly once with gapless seqs (with --spawn)
        #[arg(long, value_parser = humantime::parse_duration)]
        kill_every: Option<Duration>,
        /// With --kill-every: how many kills [default: --duration / --kill-every]
        #[arg(long, requires = "kill_every")]
        kills: Option<u32>,
    },
    /// Group fan-out: one group, some members sending; deliveries/s and latency at the members
    Group {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 5)]
        senders: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Sends in flight per sender
        #[arg(long, default_value_t = 16)]
        window: u32,
    },
    /// Idle connections: connect rate and server memory per connection
    Connect {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Connections (devices) per bench user
        #[arg(long, default_value_t = 10)]
        per_user: usize,
        /// How long to hold them before reading the server's memory
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Soak: while holding, keep closing and reopening connections (half
        /// of them, at most --concurrency) beside the held ones
        #[arg(long)]
        churn: bool,
        /// How often to sample the server's memory while holding
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        sample_every: Duration,
    },
    /// Full web QR logins: logins/s and confirm → long-poll answer latency
    Login {
        #[arg(long, default_value_t = 2000)]
        flows: usize,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// The phone's app-server (scan, confirm) when not the page's: on a
        /// cluster, another node, to time a confirm crossing nodes
        #[arg(long, value_name = "URL")]
        phone_app_server: Option<String>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Before spawning, so a spawned server inherits the higher limit too.
    crate::rlimit::raise_nofile();
    let stack = if args.spawn {
        Stack::Spawn {
            ephemeral: args.ephemeral,
            data_dir: args.data_dir.clone(),
        }
    } else {
        Stack::Running {
            app_server: args
                .app_server
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8888".into()),
        }
    };
    if let Scenario::Chat {
        kill_every: Some(_),
        ..
    } = &args.scenario
    {
        anyhow::ensure!(
            args.spawn && !args.ephemeral,
            "--kill-every restarts the server on its data dir: add --spawn (and leave out --ephemeral)"
        );
    }
    let mut target = Target::open(&stack, &args.super_code).await?;
    let report = match args.scenario {
        Scenario::Chat {
            pairs,
            window,
            kill_every: Some(kill_every),
            kills,
            duration,
            ..
        } => {
            anyhow::ensure!(!kill_every.is_zero(), "--kill-every must be longer than 0s");
            let kills = kills.unwrap_or_else(|| {
                (duration.as_secs_f64() / kill_every.as_secs_f64()).max(1.0) as u32
            });
            bench::chaos(
                &mut target,
                &ChaosOpts {
                    pairs,
                    window,
                    kill_every,
                    kills,
                },
            )
            .await?
        }
        Scenario::Chat {
            pairs,
            duration,
            window,
            rate,
            ..
        } => {
            bench::chat(
                &target,
                &ChatOpts {
                    pairs,
                    duration,
                    window,
                    rate,
                },
            )
            .await?
        }
        Scenario::Group {
            members,
            senders,
            duration,
            window,
        } => {
            bench::group(
                &target,
                &GroupOpts {
                    members,
                    senders,
                    duration,
                    window,
                },
            )
            .await?
        }
        Scenario::Connect {
            connections,
            concurrency,
            per_user,
            hold,
            churn,
            sample_every,
        } => {
            anyhow::ensure!(
                !sample_every.is_zero(),
                "--sample-every must be longer than 0s"
            );
            bench::connect(
                &target,
                &ConnectOpts {
                    connections,
                    concurrency,
                    per_user,
                    hold,
                    churn,
                    sample_every,
                },
            )
            .await?
        }
        Scenario::Login {
            flows,
            concurrency,
            phone_app_server,
        } => {
            let phone = phone_app_server
                .as_deref()
                .map(crate::client::AppClient::new);
            let opts = LoginOpts {
                flows,
                concurrency,
                phone,
            };
            bench::login(&target, &opts).await?
        }
    };
    if args.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.table());
    }
    match report.failure {
        Some(failure) => anyhow::bail!("bench {}: {failure}", report.scenario),
        None => Ok(()),
    }
}
