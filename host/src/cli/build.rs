//! `berth build [DIR] [-t NAME:TAG]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_registry::{ContentStore, Reference};
use clap::Args;

use crate::image;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The directory holding berth.toml.
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Name the image (default: the directory's name, tag `latest`).
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tag: Option<Reference>,
}

pub fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let name = match args.tag {
        Some(tag) => tag,
        None => {
            let dir = args
                .dir
                .canonicalize()
                .with_context(|| format!("{}", args.dir.display()))?;
            let base = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            base.parse().with_context(|| {
                format!("naming the image after {}; give one with -t", dir.display())
            })?
        }
    };
    let store = ContentStore::open(image::store_dir())?;
    let mut progress = super::progress::stderr("berth build");
    let built = image::build::build(&store, &args.dir, &name, progress.as_mut())?;
    drop(progress);
    super::precompile(&built.component);
    println!("{} {}", built.name, built.manifest.digest());
    Ok(ExitCode::SUCCESS)
}
