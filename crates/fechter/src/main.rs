//! The `fechter` binary: the CLI, and `fechter agent`.

use std::process::ExitCode;

use clap::Parser;
use fechter::agent::events::EventsReport;
use fechter::agent::{self, Settings, clock::SystemClock, server};
use fechter::cli::{AgentArgs, Cli, Command};
use fechter::control::{self, Request, Response, StatusReport};
use fechter::plan;
use fechter_core::NodeId;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fechter: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Plan(args) => {
            let report = plan::plan(&args)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializes")
                );
            } else {
                print!("{}", plan::render(&report, &args.addresses));
            }
            Ok(())
        }
        Command::Reload { socket } => {
            match control::call(&socket.path, &Request::Reload).map_err(|e| e.to_string())? {
                Response::Ok { body } => {
                    println!("{}", body.as_str().unwrap_or("reloaded"));
                    Ok(())
                }
                Response::Error { error } => Err(error),
            }
        }
        Command::CheckConfig { path } => {
            println!("{}", fechter::config::check_file(&path)?);
            Ok(())
        }
        Command::Keygen { path } => {
            fechter::files::keyfile::generate_key_file(&path).map_err(|e| e.to_string())?;
            println!(
                "wrote a new cluster key to {}; copy it to every node (mode 0600)",
                path.display()
            );
            Ok(())
        }
        Command::Agent(args) => run_agent(args),
        Command::Generate { out } => {
            for path in fechter::cli::generate(&out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Demo(args) => fechter::demo::run(&args),
        Command::AddAddress { spec, socket } => {
            expect_ok(control::call(&socket.path, &Request::AddAddress { spec }))
        }
        Command::RemoveAddress { spec, socket } => expect_ok(control::call(
            &socket.path,
            &Request::RemoveAddress { spec },
        )),
        Command::Up { socket } => expect_ok(control::call(&socket.path, &Request::Up)),
        Command::Down { socket } => expect_ok(control::call(&socket.path, &Request::Down)),
        Command::Forget { node, socket } => {
            expect_ok(control::call(
                &socket.path,
                &Request::Forget { node: node.clone() },
            ))?;
            println!("forgot {node}: it no longer counts toward the majority");
            Ok(())
        }
        Command::Status { json, socket } => {
            let report = status(&socket.path)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializes")
                );
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Events {
            follow,
            json,
            socket,
        } => events(&socket.path, follow, json),
        Command::Members { json, socket } => {
            let report = status(&socket.path)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.members).expect("serializes")
                );
            } else {
                print!("{}", report.render_members());
            }
            Ok(())
        }
    }
}

fn status(socket: &std::path::Path) -> Result<StatusReport, String> {
    match control::call(socket, &Request::Status).map_err(|e| e.to_string())? {
        Response::Ok { body } => serde_json::from_value(body).map_err(|e| {
            format!(
                "the agent's status is unreadable ({e}); are the CLI and agent the same version?"
            )
        }),
        Response::Error { error } => Err(error),
    }
}

/// `fechter events`: prints the history, then (`--follow`) polls for new
/// entries every 200 ms until interrupted.
fn events(socket: &std::path::Path, follow: bool, json: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mut after = None;
    let mut incarnation = None;
    loop {
        let report: EventsReport =
            match control::call(socket, &Request::Events { after }).map_err(|e| e.to_string())? {
                Response::Ok { body } => serde_json::from_value(body).map_err(|e| {
                    format!("the agent's events are unreadable ({e}); are the CLI and agent the same version?")
                })?,
                Response::Error { error } => return Err(error),
            };
        if incarnation.is_some_and(|i| i != report.incarnation) {
            // The agent restarted: its sequence numbers started again.
            incarnation = Some(report.incarnation);
            after = None;
            continue;
        }
        incarnation = Some(report.incarnation);
        let mut out = std::io::stdout().lock();
        for e in &report.events {
            let line = if json {
                serde_json::to_string(e).expect("serializes")
            } else {
                e.render()
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. `| head`)
            }
            after = Some(e.seq);
        }
        let _ = out.flush();
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn expect_ok(r: Result<Response, control::ClientError>) -> Result<(), String> {
    match r.map_err(|e| e.to_string())? {
        Response::Ok { .. } => Ok(()),
        Response::Error { error } => Err(error),
    }
}

fn host_name() -> Result<NodeId, String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read the host name ({e}); give --node-id"))?;
    name.trim()
        .parse::<NodeId>()
        .map_err(|e| format!("the host name is not a usable node id ({e}); give --node-id"))
}

fn run_agent(args: AgentArgs) -> Result<(), String> {
    let r = fechter::config::resolve(&args, host_name)?;
    init_logging(r.log_json);
    if r.key_file.is_none() && r.insecure {
        tracing::warn!(
            "--insecure: cluster traffic is neither authenticated nor encrypted; anyone who can reach this port can join the cluster"
        );
    }
    let key = load_key(&r)?;
    // Connections to the control socket and /metrics are capped; the rest
    // (check scripts, hooks, netlink, the state files) must not meet the
    // usual soft limit of 1,024 either.
    match agent::limits::raise_nofile() {
        Ok((before, now)) if before != now => {
            tracing::info!("open files limit raised from {before} to {now}");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    // Reload re-resolves the same flags and file; what the running process
    // cannot change (its sockets, its logging) must stay as it is.
    let (listen, control, log_json, dry_run, realtime) = (
        r.listen,
        r.control_socket.clone(),
        r.log_json,
        r.dry_run,
        r.realtime,
    );
    let reread = move || -> Result<Settings, String> {
        let n = fechter::config::resolve(&args, host_name)?;
        let mut fixed = Vec::new();
        if n.listen != listen {
            fixed.push("listen");
        }
        if n.control_socket != control {
            fixed.push("control_socket");
        }
        if n.log_json != log_json {
            fixed.push("log_format");
        }
        if n.dry_run != dry_run {
            fixed.push("dry_run");
        }
        if n.realtime != realtime {
            fixed.push("realtime");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "these settings need a restart of the agent: {}; nothing was changed",
                fixed.join(", ")
            ));
        }
        Ok(Settings {
            key: load_key(&n)?,
            ..n.settings
        })
    };
    let settings = Settings {
        key,
        reload: agent::Reloader(Some(std::sync::Arc::new(reread))),
        ..r.settings
    };
    if r.realtime {
        fechter::realtime::enter()?;
        tracing::info!(
            priority = fechter::realtime::PRIORITY,
            "running at real-time priority (SCHED_RR) with memory locked"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let socket = agent::net::TickedUdp::bind(r.listen).map_err(|e| {
            format!(
                "cannot listen on {} ({e}); is it this machine's address, and is the port free?",
                r.listen
            )
        })?;
        let listener = server::bind(&r.control_socket).map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let reload_tx = tx.clone();
        server::start(listener, tx).map_err(|e| format!("cannot serve the control socket: {e}"))?;
        // systemd (Type=notify): READY=1 follows from the agent loop once it
        // has joined or formed a cluster (fechter::systemd::ready).
        fechter::systemd::status(&format!(
            "listening on {}; joining or forming a cluster",
            r.listen
        ));
        let shutdown = shutdown_signal(reload_tx);
        let result = if r.dry_run {
            tracing::warn!("--dry-run: interfaces are never changed; actions are only logged");
            // No wire to look at: it assumes a segment that shows life and
            // where nobody else answers for its addresses.
            let platform = agent::platform::RecordingPlatform::new().with_live_segment();
            agent::run(settings, socket, SystemClock, platform, rx, shutdown).await
        } else {
            let platform =
                agent::linux::LinuxPlatform::new(settings.lease, settings.announce_burst.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            agent::run(settings, socket, SystemClock, platform, rx, shutdown).await
        };
        let _ = std::fs::remove_file(&r.control_socket);
        result.map_err(|e| e.to_string())
    })
}

/// Completes on SIGTERM or SIGINT. SIGHUP (`systemctl reload`) re-reads the
/// configuration through the agent (as `fechter reload` does). The handlers
/// are installed when this is called (before the agent can report itself
/// ready), not when the future is first polled.
fn shutdown_signal(
    reload: tokio::sync::mpsc::Sender<agent::ControlCall>,
) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    async move {
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: re-reading the configuration");
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if reload.send((Request::Reload, tx)).await.is_ok() {
                        // The agent logs the outcome itself.
                        tokio::spawn(async move { let _ = rx.await; });
                    }
                }
            }
        }
    }
}

/// The cluster key the resolved settings name.
fn load_key(r: &fechter::config::Resolved) -> Result<fechter::files::keyfile::ClusterKey, String> {
    match (&r.key_file, r.insecure) {
        (Some(path), _) => fechter::files::keyfile::load_key_file(path).map_err(|e| e.to_string()),
        (None, true) => Ok(fechter::files::keyfile::ClusterKey::insecure()),
        (None, false) => Err("no cluster key: create one with `fechter keygen /etc/fechter/cluster.key`, copy it to every node, and start the agent with --key-file /etc/fechter/cluster.key (or give --insecure for a throw-away test cluster)".into()),
    }
}

/// Logs to stderr (journald takes it under systemd): text by default,
/// JSON lines with `--log-format json`. `FECHTER_LOG` sets the level.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FECHTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
