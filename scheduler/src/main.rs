use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = scheduler::Config::parse();
    scheduler::run(config)
}
