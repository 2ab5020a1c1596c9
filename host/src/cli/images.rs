//! `berth images`: what the local store holds.

use std::process::ExitCode;

use berth_registry::ContentStore;

use crate::image;
use crate::image::model::Image;

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
