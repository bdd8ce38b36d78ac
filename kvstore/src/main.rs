use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = kvstore::Config::parse();
    kvstore::run(config)
}
