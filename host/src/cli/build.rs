//! `berth build [DIR] [-t NAME:TAG]` and `berth images`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_registry::{ContentStore, Reference};
use clap::Args;

use crate::image;
use crate::image::model::Image;

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
    let built = image::build::build(&store, &args.dir, &name, &mut |step| {
        eprintln!("berth build: {step}")
    })?;
    println!("{} {}", built.name, built.manifest.digest());
    Ok(ExitCode::SUCCESS)
}

pub fn images() -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    println!("{:<40} {:<19} {:>10}", "NAME", "DIGEST", "SIZE");
    for (name, descriptor) in store.tags()? {
        let digest = descriptor.digest().to_string();
        let size: u64 = match Image::load(&store, &digest) {
            Ok(image) => image.manifest.layers().iter().map(|l| l.size()).sum(),
            Err(_) => 0,
        };
        println!(
            "{name:<40} {:<19} {:>10}",
            &digest[..19.min(digest.len())],
            human(size)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
