//! The grammar of the OCI distribution spec for what clients send: repository
//! names, tags and digests. Whatever passes here is safe to use as a path
//! below a registry's root: names have no empty, `.` or `..` components and
//! tags and digests no `/`.

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 bytes.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= 255 && !name.is_empty() && name.split('/').all(is_valid_component)
}

fn is_valid_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: `.`, `_`, `__` or one or more `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The digest algorithms the registry checks, each a `blobs/` folder.
pub const ALGORITHMS: [&str; 2] = ["sha256", "sha512"];

/// A digest's algorithm and its lowercase hex, for the algorithms the
/// registry checks: `sha256:` and 64 hex digits, `sha512:` and 128.
pub fn split_digest(digest: &str) -> Option<(&str, &str)> {
    let (algorithm, hex) = digest.split_once(':')?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    (hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some((algorithm, hex))
}

/// A running hash of the algorithm a digest names.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// The hash `digest` is of; none for an algorithm the registry lacks.
    pub fn for_digest(digest: &str) -> Option<Hasher> {
        use sha2::Digest as _;
        match split_digest(digest)?.0 {
            "sha256" => Some(Hasher::sha256()),
            "sha512" => Some(Hasher::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    pub fn sha256() -> Hasher {
        use sha2::Digest as _;
        Hasher::Sha256(sha2::Sha256::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of what was hashed, `algorithm:hex`.
    pub fn digest(self) -> String {
        use sha2::Digest as _;
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// A digest berth can check: `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_either_algorithm_are_split_and_others_refused() {
        let sha256 = format!("sha256:{}", "a".repeat(64));
        let sha512 = format!("sha512:{}", "0".repeat(128));
        assert_eq!(split_digest(&sha256), Some(("sha256", &sha256[7..])));
        assert_eq!(split_digest(&sha512), Some(("sha512", &sha512[7..])));
        for bad in [
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("md5:{}", "a".repeat(32)),
            "sha256".to_owned(),
        ] {
            assert_eq!(split_digest(&bad), None, "{bad}");
        }
        let mut hasher = Hasher::for_digest(&sha512).unwrap();
        hasher.update(b"abc");
        assert!(hasher.digest().starts_with("sha512:ddaf35a193617aba"));
    }

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "library/busybox", "a.b_c__d---e/f0", "x/y/z"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", ".a", "a.", "a..b", "a___b", "a/.", "a b",
            "a:b",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(!is_valid_name(&"a".repeat(256)));
    }

    #[test]
    fn tags_and_digests_follow_the_spec_grammar() {
        for ok in ["latest", "v1.0", "_x", "A-b.c_d"] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"a".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
        assert!(is_sha256_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha512:{}", "a".repeat(128))));
        assert!(!is_sha256_digest("sha256:../../etc"));
    }
}
