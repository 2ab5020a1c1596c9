//! What the local store holds, and changing its names: `berth images`,
//! `berth inspect`, `berth tag`, `berth rmi`, `berth image prune`,
//! `berth save`, `berth load`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_registry::{ContentStore, Reference, archive};
use clap::Subcommand;

use crate::image;
use crate::image::model::{Entrypoint, Image, Layer};

pub fn images() -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    println!("{:<40} {:<19} {:>10}", "NAME", "DIGEST", "SIZE");
    for (name, descriptor) in store.tags()? {
        let digest = descriptor.digest().to_string();
        let size: u64 = match Image::resolve(&store, &descriptor) {
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

/// `berth inspect REF`: the image's digest, config and layers as JSON.
pub fn inspect(reference: Reference) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    let name = reference.to_string();
    let descriptor = image::lookup(&store, &reference)?;
    let image = Image::resolve(&store, &descriptor)?;
    let digest = image.manifest_digest.clone();
    let config: serde_json::Value = store.read_json(image.manifest.config().digest().as_ref())?;
    let layers: Vec<serde_json::Value> = image
        .layers
        .iter()
        .map(|layer| match layer {
            Layer::Component(d) => serde_json::json!({
                "kind": "component",
                "digest": d.digest().to_string(),
                "size": d.size(),
                "mediaType": d.media_type().to_string(),
            }),
            Layer::Bundle {
                descriptor: d,
                mount,
                ..
            } => serde_json::json!({
                "kind": "bundle",
                "digest": d.digest().to_string(),
                "size": d.size(),
                "mediaType": d.media_type().to_string(),
                "mount": mount,
            }),
        })
        .collect();
    let out = serde_json::json!({
        "name": name,
        "digest": digest,
        "platform": image.platform.to_string(),
        "entrypoint": image.entrypoint().map(|e| match e {
            Entrypoint::Layer(d) => d.digest().to_string(),
            Entrypoint::File(path) => path.clone(),
        }),
        "layers": layers,
        "config": config,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `berth tag SOURCE TARGET`.
pub fn tag(source: Reference, target: Reference) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    let descriptor = image::lookup(&store, &source)?;
    store.tag(&target.tagged_name(), &descriptor)?;
    Ok(ExitCode::SUCCESS)
}

/// `berth rmi NAME…`: removes the names, then every blob and unpacked image
/// no remaining name needs (as `docker rmi` frees layers).
pub fn rmi(references: Vec<Reference>) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    for reference in &references {
        let name = reference.tagged_name();
        let removed = store.untag(&name)?;
        println!("untagged {name} ({})", removed.digest());
    }
    prune(&store)?;
    Ok(ExitCode::SUCCESS)
}

/// `berth save NAME… -o FILE`: an OCI archive of the images. Written beside
/// `FILE` and renamed into place, so a failed save leaves no partial archive.
pub fn save(references: Vec<Reference>, output: &Path) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    let names: Vec<String> = references.iter().map(Reference::tagged_name).collect();
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    archive::export(&store, &names, std::io::BufWriter::new(tmp.as_file_mut()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", output.display()))?;
    tmp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// `berth load -i FILE`: every blob is verified as it arrives; names are
/// given only once all they reach is stored.
pub fn load(input: &Path) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let names = archive::import(&store, std::io::BufReader::new(file))
        .with_context(|| format!("loading {}", input.display()))?;
    for name in names {
        println!("loaded {name}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Delete blobs and unpacked images that no name refers to.
    Prune,
}

pub fn image(command: ImageCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::Prune => {
            let store = ContentStore::open(image::store_dir())?;
            prune(&store)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn prune(store: &ContentStore) -> anyhow::Result<()> {
    let report = store.prune()?;
    // Indexes resolve to manifests, so keep every manifest a name reaches.
    let keep = store.reachable(store.tags()?.into_iter().map(|(_, d)| d))?;
    let cleaned = image::materialize::clean(&image::images_dir(), &keep)?;
    println!(
        "deleted {} blobs ({}), {} unpacked images and {} unpacked trees",
        report.blobs,
        human(report.bytes),
        cleaned.images,
        cleaned.trees
    );
    Ok(())
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
