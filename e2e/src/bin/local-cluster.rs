fn main() -> anyhow::Result<()> {
    anyhow::bail!("local-cluster is not built yet")
}
