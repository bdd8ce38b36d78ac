//! `local-cluster up|down|status`: a whole Rustkube cluster as separate processes in one
//! directory (DESIGN.md §9).

use clap::{Parser, Subcommand};
use e2e::cluster::{self, UpOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "local-cluster",
    version,
    about = "Start and stop a local Rustkube cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a PKI and kubeconfigs, start every daemon, wait until ready.
    Up {
        #[arg(long)]
        dir: PathBuf,
        /// Control-plane replicas (kvstore members and apiservers): 1 or 3.
        #[arg(long, default_value_t = 1)]
        masters: usize,
        #[arg(long, default_value_t = 0)]
        nodes: usize,
        #[arg(long, default_value_t = 0)]
        simulated_nodes: usize,
        #[arg(long, default_value = "runc")]
        runtime: String,
        /// Return once ready and leave the cluster running (stop it with `down`).
        #[arg(long)]
        background: bool,
    },
    /// Stop a cluster started with --background.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show the cluster's processes.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up {
            dir,
            masters,
            nodes,
            simulated_nodes,
            runtime,
            background,
        } => {
            let opts = UpOptions {
                dir,
                masters,
                nodes,
                simulated_nodes,
                runtime,
                background,
            };
            cluster::validate(&opts)?;
            if !background {
                // Blocked before any daemon starts, so no signal is lost in between.
                cluster::block_shutdown_signals()?;
            }
            let mut running = cluster::up(&opts)?;
            let dir = opts.dir.canonicalize()?;
            print!("{}", cluster::instructions(&dir, &running.state));
            if background {
                println!("Stop it with: local-cluster down --dir {}", dir.display());
                running.detach();
                Ok(())
            } else {
                println!("Press Ctrl-C to stop.");
                let result = cluster::wait_foreground(&mut running);
                // Everything it recorded has stopped: the record goes too.
                std::fs::remove_file(dir.join("cluster.json"))?;
                result
            }
        }
        Command::Down { dir } => {
            cluster::down(&dir)?;
            println!("stopped the cluster in {}", dir.display());
            Ok(())
        }
        Command::Status { dir } => {
            print!("{}", cluster::status(&dir)?);
            Ok(())
        }
    }
}
