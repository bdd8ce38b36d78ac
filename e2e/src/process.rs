//! One daemon started by the harness: its own process group, output appended to a log
//! file, stopped (TERM, grace period, KILL, reap) when dropped — so a failing or
//! panicking test leaves nothing running.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start a process; kept so it can be restarted with the same arguments.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub log: PathBuf,
    /// A detached process outlives the launcher (`local-cluster up --background`): no
    /// parent-death signal, and dropping the handle leaves it running.
    pub detached: bool,
}

impl Spec {
    pub fn new(name: &str, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Spec {
            name: name.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log: log.into(),
            detached: false,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// The default time a process gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Process {
    spec: Spec,
    child: Option<Child>,
    pid: i32,
    last_exit: Option<ExitStatus>,
}

impl Process {
    pub fn start(spec: Spec) -> Result<Self> {
        let child = spawn(&spec)?;
        let pid = child.id() as i32;
        Ok(Process {
            spec,
            child: Some(child),
            pid,
            last_exit: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The pid of the current incarnation (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// Whether the process is alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            // try_wait only fails if the child was already reaped elsewhere.
            Some(Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The exit status once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.last_exit
    }

    fn signal_group(&self, sig: Signal) -> Result<()> {
        match killpg(Pid::from_raw(self.pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("signalling {} ({})", self.spec.name, self.pid))
            }
        }
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it and sweeps any
    /// children it left in its process group.
    pub fn stop_with(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        if self.child.is_none() {
            return Ok(self.last_exit);
        }
        self.signal_group(Signal::SIGCONT)?; // a paused process cannot handle SIGTERM
        self.signal_group(Signal::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_running() {
            self.signal_group(Signal::SIGKILL)?;
            self.reap()?;
        }
        // Whatever the leader left behind in its group goes too.
        self.signal_group(Signal::SIGKILL)?;
        Ok(self.last_exit)
    }

    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        self.stop_with(GRACE)
    }

    /// SIGKILL, as a crash: no chance to flush or clean up.
    pub fn kill(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.signal_group(Signal::SIGKILL)?;
            self.reap()?;
        }
        Ok(())
    }

    fn reap(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = child
                .wait()
                .with_context(|| format!("waiting for {}", self.spec.name))?;
            self.last_exit = Some(status);
        }
        Ok(())
    }

    /// SIGSTOP: the process stays alive but does nothing (a hung member).
    pub fn pause(&mut self) -> Result<()> {
        self.signal_group(Signal::SIGSTOP)
    }

    pub fn resume(&mut self) -> Result<()> {
        self.signal_group(Signal::SIGCONT)
    }

    /// Starts it again with the same arguments (stopping the old one first if needed).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let child = spawn(&self.spec)?;
        self.pid = child.id() as i32;
        self.child = Some(child);
        self.last_exit = None;
        Ok(())
    }

    /// Gives the process up without stopping it (it keeps running after we exit).
    pub fn detach(mut self) -> i32 {
        self.child = None;
        self.pid
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("warning: stopping {}: {e:#}", self.spec.name);
            }
        }
    }
}

/// The last `lines` lines of a file ("" if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn(spec: &Spec) -> Result<Child> {
    if !spec.program.is_file() {
        bail!(
            "{}: program {} not found",
            spec.name,
            spec.program.display()
        );
    }
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let detached = spec.detached;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (sigprocmask, prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            // A launcher may block SIGINT/SIGTERM to wait for them; its children must not
            // inherit that mask or they could not be stopped gracefully.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if !detached {
                // If the harness dies without running Drop (SIGKILL), take the daemon with
                // it. Note: this fires when the *thread* that spawned the child exits, so
                // spawn from a thread that lives as long as the process should.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    // The parent already died between fork and prctl.
                    libc::_exit(1);
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))
}
