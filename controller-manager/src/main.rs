use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = controller_manager::Config::parse();
    controller_manager::run(config)
}
