use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = kube_proxy::Config::parse();
    kube_proxy::run(config)
}
