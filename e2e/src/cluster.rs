//! What `local-cluster` does: generate the PKI and kubeconfigs, start the daemons that
//! exist so far as processes, record them in `DIR/cluster.json`, and stop exactly those.

use crate::apiserver::{spawn_apiserver, wait_ready, ApiserverSpec};
use crate::kvstore::{Flavor, KvCluster, Options};
use crate::pki::{self, Pki};
use crate::process::Process;
use crate::RunDir;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The components of a cluster in start order, and whether each is built yet. Adding a
/// daemon to `local-cluster` starts with flipping its entry here.
pub const COMPONENTS: &[(&str, bool)] = &[
    ("kvstore", true),
    ("apiserver", true),
    ("scheduler", true),
    ("controller-manager", true),
    ("kubelet", false),
    ("kube-proxy", false),
];

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub masters: usize,
    pub nodes: usize,
    pub simulated_nodes: usize,
    pub runtime: String,
    pub background: bool,
}

/// One process of a running cluster, as recorded in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recorded {
    pub name: String,
    pub pid: i32,
    pub program: PathBuf,
    /// Field 22 of `/proc/<pid>/stat`: with the pid, identifies the process even if the
    /// pid is later reused.
    pub start_time: u64,
    pub log: PathBuf,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub processes: Vec<Recorded>,
    pub kvstore_endpoints: Vec<String>,
    pub background: bool,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// Checks flags that name things this build cannot run yet.
pub fn validate(opts: &UpOptions) -> Result<()> {
    if opts.masters != 1 && opts.masters != 3 {
        bail!("--masters must be 1 or 3 (got {})", opts.masters);
    }
    if opts.runtime != "runc" && opts.runtime != "simulated" {
        bail!(
            "--runtime must be runc or simulated (got {:?})",
            opts.runtime
        );
    }
    if opts.nodes > 0 || opts.simulated_nodes > 0 {
        bail!(
            "--nodes/--simulated-nodes: the kubelet is not built yet, so only a control plane \
             can run (use --nodes 0)"
        );
    }
    Ok(())
}

fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it start past ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); field 22 is at index 19.
    if fields.first() == Some(&"Z") {
        return None; // a zombie has exited
    }
    fields.get(19)?.parse().ok()
}

/// Whether the recorded process is still the one we started (not a reused pid).
pub fn is_ours_and_alive(p: &Recorded) -> bool {
    let Some(start) = proc_start_time(p.pid) else {
        return false;
    };
    if start != p.start_time {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    argv0 == p.program.as_os_str().as_encoded_bytes()
}

pub fn read_state(dir: &Path) -> Result<State> {
    let path = state_path(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no cluster recorded in {} (is one running?)", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A started cluster: its processes (stopped when dropped unless detached).
pub struct Running {
    pub state: State,
    kv: KvCluster,
    apiservers: Vec<Process>,
    /// Scheduler, controller-manager, …: stopped first.
    components: Vec<Process>,
}

impl Running {
    pub fn stop(&mut self) -> Result<()> {
        for c in &mut self.components {
            c.stop()?;
        }
        for a in &mut self.apiservers {
            a.stop()?;
        }
        self.kv.stop()
    }

    /// Returns the name of a process that has exited, if any.
    pub fn exited(&mut self) -> Option<String> {
        for a in self.components.iter_mut().chain(&mut self.apiservers) {
            if !a.is_running() {
                return Some(a.name().to_string());
            }
        }
        self.kv
            .members
            .iter_mut()
            .find_map(|m| (!m.process.is_running()).then(|| m.name.clone()))
    }

    /// Leaves every process running and forgets them (background mode).
    pub fn detach(self) {
        for m in self.kv.members {
            m.process.detach();
        }
        for a in self.apiservers.into_iter().chain(self.components) {
            a.detach();
        }
    }
}

/// `preferred` when it is free, else any free port (so a second cluster, or a test,
/// never collides with `make run`'s).
fn port_or_free(preferred: u16) -> Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => crate::ports::free_port(),
    }
}

/// Generates the PKI and kubeconfigs and starts the daemons; returns once they are ready.
pub fn up(opts: &UpOptions) -> Result<Running> {
    validate(opts)?;
    let run = RunDir::at(&opts.dir)?;
    if let Ok(old) = read_state(run.path()) {
        if old.processes.iter().any(is_ours_and_alive) {
            bail!(
                "a cluster is already running in {}: stop it with `local-cluster down --dir {}`",
                run.path().display(),
                run.path().display()
            );
        }
    }
    let pki = Pki::create(&run.path().join("pki"))?;
    let admin = pki.client("admin", pki::ADMIN)?;
    let ports: Vec<u16> = (0..opts.masters)
        .map(|i| port_or_free(6443 + i as u16))
        .collect::<Result<_>>()?;
    let apiservers: Vec<String> = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    // kubectl takes one server; the components' kubeconfigs list all for failover.
    let admin_kubeconfig = run.path().join("kubeconfig");
    pki::write_kubeconfig(
        &admin_kubeconfig,
        &pki.kubeconfig(&apiservers[..1], "kubernetes-admin", &admin)?,
    )?;
    for (file, ident) in [
        ("scheduler", pki::SCHEDULER),
        ("controller-manager", pki::CONTROLLER_MANAGER),
        ("kube-proxy", pki::KUBE_PROXY),
    ] {
        let creds = pki.client(file, ident)?;
        pki::write_kubeconfig(
            &run.path()
                .join("kubeconfigs")
                .join(format!("{file}.kubeconfig")),
            &pki.kubeconfig(&apiservers, ident.0, &creds)?,
        )?;
    }
    let etcd_client = pki.client("apiserver-etcd-client", pki::APISERVER_ETCD_CLIENT)?;
    let serving = pki.serving(
        "apiserver",
        "kube-apiserver",
        &["kubernetes", "kubernetes.default"],
    )?;

    let kv = KvCluster::start(
        &run,
        Flavor::Kvstore,
        opts.masters,
        &Options {
            detached: opts.background,
            ..Default::default()
        },
    )?;
    let mut running = Running {
        state: State {
            processes: Vec::new(),
            kvstore_endpoints: kv.endpoints(),
            background: opts.background,
        },
        kv,
        apiservers: Vec::new(),
        components: Vec::new(),
    };
    for (i, port) in ports.iter().enumerate() {
        let process = spawn_apiserver(
            &run,
            &ApiserverSpec {
                name: &format!("apiserver{i}"),
                port: *port,
                etcd_servers: &running.state.kvstore_endpoints,
                etcd_client: &etcd_client,
                serving: &serving,
                ca: &pki.ca().cert,
                token_file: None,
                service_account_key: &pki.service_account_key(),
                detached: opts.background,
                // As kubeadm's clusters: the components act under their own roles.
                extra_args: &["--authorization-mode=RBAC".to_string()],
            },
        )?;
        running.apiservers.push(process);
    }
    for i in 0..running.apiservers.len() {
        if let Err(e) = wait_ready(
            &mut running.apiservers[i],
            &admin_kubeconfig,
            Duration::from_secs(60),
        ) {
            // Detached processes outlive a dropped handle: stop them explicitly.
            let _ = running.stop();
            return Err(e);
        }
    }
    // One scheduler and one controller-manager per master, leader-elected as in
    // Kubernetes.
    let mut component_urls = Vec::new();
    for (i, binary) in (0..opts.masters).flat_map(|i| [(i, "scheduler"), (i, "controller-manager")])
    {
        let kubeconfig = run
            .path()
            .join("kubeconfigs")
            .join(format!("{binary}.kubeconfig"));
        let mut c = crate::components::spawn(
            &run,
            &format!("{binary}{i}"),
            binary,
            &kubeconfig,
            &["--leader-elect".to_string()],
            opts.background,
        )?;
        let ready = c.wait_ready(Duration::from_secs(60));
        component_urls.push(format!("http://{}/metrics", c.metrics));
        running.components.push(c.process);
        if let Err(e) = ready {
            let _ = running.stop();
            return Err(e);
        }
    }
    let record = |p: &Process, endpoint: String| Recorded {
        name: p.name().to_string(),
        pid: p.pid(),
        program: p.spec().program.clone(),
        start_time: proc_start_time(p.pid()).unwrap_or(0),
        log: p.log_path().to_path_buf(),
        endpoints: vec![endpoint],
    };
    let mut processes: Vec<Recorded> = running
        .kv
        .members
        .iter()
        .map(|m| record(&m.process, m.client_url(false)))
        .collect();
    for (a, url) in running.apiservers.iter().zip(&apiservers) {
        processes.push(record(a, url.clone()));
    }
    for (c, url) in running.components.iter().zip(component_urls) {
        processes.push(record(c, url));
    }
    running.state.processes = processes;
    std::fs::write(
        state_path(run.path()),
        serde_json::to_string_pretty(&running.state)?,
    )?;
    Ok(running)
}

/// What to tell the user once the cluster is up.
pub fn instructions(dir: &Path, state: &State) -> String {
    let built: Vec<&str> = COMPONENTS.iter().filter(|c| c.1).map(|c| c.0).collect();
    let missing: Vec<&str> = COMPONENTS.iter().filter(|c| !c.1).map(|c| c.0).collect();
    format!(
        "Rustkube local cluster is up in {dir}\n\
         running: {built}\n\
         not built yet: {missing}\n\n\
         Use it with kubectl:\n  \
         export KUBECONFIG={dir}/kubeconfig\n  \
         kubectl get namespaces\n\n\
         Inspect the kvstore with etcdctl:\n  \
         ETCDCTL_API=3 etcdctl --endpoints {eps} member list\n\n\
         Logs: {dir}/logs/   Status: local-cluster status --dir {dir}\n",
        dir = dir.display(),
        built = built.join(", "),
        missing = missing.join(", "),
        eps = state.kvstore_endpoints.join(","),
    )
}

/// Stops the processes recorded in `DIR/cluster.json` — only those that are still the
/// processes we started.
pub fn down(dir: &Path) -> Result<()> {
    let state = read_state(dir)?;
    for p in state.processes.iter().rev() {
        if !is_ours_and_alive(p) {
            continue;
        }
        stop_recorded(p, Duration::from_secs(10))?;
    }
    std::fs::remove_file(state_path(dir))?;
    Ok(())
}

fn stop_recorded(p: &Recorded, grace: Duration) -> Result<()> {
    let group = Pid::from_raw(p.pid);
    let signal = |sig| match killpg(group, sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("signalling {} ({}): {e}", p.name, p.pid)),
    };
    signal(Signal::SIGTERM)?;
    let deadline = Instant::now() + grace;
    while is_ours_and_alive(p) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_ours_and_alive(p) {
        signal(Signal::SIGKILL)?;
    }
    Ok(())
}

/// One line per recorded process: name, pid, alive or not, endpoints.
pub fn status(dir: &Path) -> Result<String> {
    let state = read_state(dir)?;
    let mut out = String::new();
    for p in &state.processes {
        let alive = if is_ours_and_alive(p) {
            "running"
        } else {
            "stopped"
        };
        out.push_str(&format!(
            "{:<20} pid {:<8} {:<8} {}\n",
            p.name,
            p.pid,
            alive,
            p.endpoints.join(",")
        ));
    }
    for (name, built) in COMPONENTS {
        if !built {
            out.push_str(&format!("{name:<20} not built yet\n"));
        }
    }
    Ok(out)
}

/// Keeps a foreground cluster until SIGINT/SIGTERM (or until one of its processes dies),
/// then stops it. SIGINT and SIGTERM must be blocked before the daemons were started.
pub fn wait_foreground(running: &mut Running) -> Result<()> {
    let set = shutdown_signals();
    loop {
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: `set` is a valid, initialised signal set; a null info pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            eprintln!("local-cluster: stopping");
            return running.stop();
        }
        if let Some(name) = running.exited() {
            running.stop()?;
            bail!("{name} exited unexpectedly; see its log in logs/");
        }
    }
}

/// SIGINT + SIGTERM, blocked in this thread so `wait_foreground` can wait for them.
pub fn block_shutdown_signals() -> Result<()> {
    shutdown_signals().thread_block()?;
    Ok(())
}

fn shutdown_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}
