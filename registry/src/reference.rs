//! Image references: `[registry/]repository[:tag][@sha256:…]`, as Docker and
//! the OCI distribution spec write them. A reference without tag or digest
//! means `:latest`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Everything before the tag: `registry.example:5000/team/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an image reference: {why}")]
pub struct ReferenceError {
    pub input: String,
    pub why: String,
}

impl Reference {
    /// `repository:tag` (tag defaulting to `latest`): the name images are
    /// stored under in the local store's index.
    pub fn tagged_name(&self) -> String {
        format!(
            "{}:{}",
            self.repository,
            self.tag.as_deref().unwrap_or("latest")
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, ReferenceError> {
        let err = |why: &str| ReferenceError {
            input: input.to_owned(),
            why: why.to_owned(),
        };
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| err("the digest must be sha256:<64 hex digits>"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(err("the digest must be sha256:<64 lowercase hex digits>"));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if repository.is_empty() {
            return Err(err("the repository name is empty"));
        }
        let mut components = repository.split('/').peekable();
        let first = components.next().unwrap_or("");
        // The first component is a registry host if it looks like one.
        let is_host = repository.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        if is_host {
            if !first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
            {
                return Err(err("the registry host has invalid characters"));
            }
        } else if !path_component_ok(first) {
            return Err(err(
                "repository components are lowercase letters and digits, separated by '.', '_', '__' or '-'",
            ));
        }
        for c in components {
            if !path_component_ok(c) {
                return Err(err(
                    "repository components are lowercase letters and digits, separated by '.', '_', '__' or '-'",
                ));
            }
        }
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(err(
                    "tags are up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        Ok(Reference {
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's path component.
fn path_component_ok(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or a run of '-', followed by alnum.
        let sep_len = match b {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|&&x| x == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        if !bytes
            .get(i)
            .is_some_and(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn names_tags_hosts_and_digests() {
        assert_eq!(r("hello").tagged_name(), "hello:latest");
        assert_eq!(r("hello:1").tag.as_deref(), Some("1"));
        let with_port = r("localhost:5000/team/app:v2");
        assert_eq!(with_port.repository, "localhost:5000/team/app");
        assert_eq!(with_port.tag.as_deref(), Some("v2"));
        let no_tag = r("registry.example:5000/app");
        assert_eq!(no_tag.repository, "registry.example:5000/app");
        assert_eq!(no_tag.tag, None);
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned = r(&format!("app:1@{d}"));
        assert_eq!(pinned.digest.as_deref(), Some(d.as_str()));
        assert_eq!(pinned.to_string(), format!("app:1@{d}"));
        assert!(Reference::from_str("a__b-c.d--e").is_ok());
    }

    #[test]
    fn bad_references_say_why() {
        for bad in [
            "",
            "Hello",
            "app:",
            "app:-x",
            "app@sha256:abc",
            "app/../x",
            "a..b",
            "-a",
            "app@md5:00",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} parsed");
        }
        let e = "Hello".parse::<Reference>().unwrap_err().to_string();
        assert!(e.contains("lowercase"), "{e}");
    }
}
