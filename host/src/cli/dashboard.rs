//! `berth dashboard`: a one-time sign-in link to the web dashboard of the
//! running daemon (or `berth up`), minted with the admin's rights.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Open the link in the desktop's browser (xdg-open) too.
    #[arg(long)]
    open: bool,
    /// Print the link for a browser on another machine (the API port,
    /// over HTTPS with berth's CA) instead.
    #[arg(long)]
    remote: bool,
}

pub fn dashboard(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let (status, reply) = super::kube::runtime()?.block_on(crate::api::client::call(
        &crate::api::socket_path(),
        "POST",
        "/berth/dashboard/login",
        None,
    ))?;
    if status != 200 {
        anyhow::bail!(
            "the daemon gave no sign-in link: {}",
            crate::api::client::error_of(&reply)
        );
    }
    let field = if args.remote { "remote" } else { "url" };
    let Some(url) = reply[field].as_str() else {
        anyhow::bail!("the daemon's answer has no {field}: {reply}");
    };
    println!("{url}");
    if args.open {
        std::process::Command::new("xdg-open")
            .arg(url)
            .status()
            .map_err(|e| anyhow::anyhow!("opening a browser with xdg-open: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}
