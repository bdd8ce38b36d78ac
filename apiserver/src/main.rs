use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = apiserver::Config::parse();
    apiserver::run(config)
}
