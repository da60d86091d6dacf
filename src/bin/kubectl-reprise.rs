//! `kubectl reprise`: kubectl finds this binary on the PATH as a plugin.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    reprise::plugin::main().await
}
