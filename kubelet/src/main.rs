use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = kubelet::Config::parse();
    kubelet::run(config)
}
