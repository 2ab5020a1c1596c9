//! Answering a registry's `WWW-Authenticate` challenge.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{Access, Client, ClientError, Remote, Result, expect};

/// The scheme and `key="value"` parameters of a challenge. Values may hold
/// commas (`scope="repository:a:pull,push"`), so quotes are honoured.
fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.push((key.trim().to_ascii_lowercase(), value));
    }
    (scheme.to_ascii_lowercase(), params)
}

/// The `Authorization` value that answers `challenge`.
pub(super) async fn authorize(
    client: &Client,
    remote: &Remote,
    access: Access,
    challenge: &str,
) -> Result<String> {
    let basic = client
        .options()
        .credentials
        .get(&remote.registry)
        .map(|(user, password)| format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))));
    let (scheme, params) = parse_challenge(challenge);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match scheme.as_str() {
        "basic" => basic.ok_or_else(|| {
            ClientError::Auth(format!(
                "{} needs a user and password: log in with `berth login {}`",
                remote.registry, remote.registry
            ))
        }),
        "bearer" => {
            let realm = param("realm").ok_or_else(|| {
                ClientError::Auth(format!(
                    "{}: a Bearer challenge without a realm",
                    remote.registry
                ))
            })?;
            let mut url = reqwest::Url::parse(realm).map_err(|e| {
                ClientError::Auth(format!("{}: bad token realm {realm}: {e}", remote.registry))
            })?;
            let actions = match access {
                Access::Pull => "pull",
                Access::Push => "pull,push",
            };
            {
                let mut query = url.query_pairs_mut();
                if let Some(service) = param("service") {
                    query.append_pair("service", service);
                }
                // A login check names no repository, and asks for no scope.
                if !remote.repository.is_empty() {
                    let scope = format!("repository:{}:{actions}", remote.repository);
                    query.append_pair("scope", &scope);
                }
            }
            let what = format!("getting a token from {realm}");
            let mut request = client.http().get(url);
            if let Some(basic) = &basic {
                request = request.header(reqwest::header::AUTHORIZATION, basic);
            }
            let response = request.send().await.map_err(|source| ClientError::Http {
                what: what.clone(),
                source,
            })?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                return Err(ClientError::Auth(format!(
                    "{} refused the credentials{}",
                    remote.registry,
                    if basic.is_some() {
                        ""
                    } else {
                        ": log in with `berth login`"
                    }
                )));
            }
            let response = expect(response, &what, &[reqwest::StatusCode::OK]).await?;
            let body = response.bytes().await.map_err(|source| ClientError::Http {
                what: what.clone(),
                source,
            })?;
            let body: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ClientError::Auth(format!("{what}: {e}")))?;
            let token = body
                .get("token")
                .or_else(|| body.get("access_token"))
                .and_then(|t| t.as_str())
                .ok_or_else(|| ClientError::Auth(format!("{what}: no token in the answer")))?;
            Ok(format!("Bearer {token}"))
        }
        other => Err(ClientError::Auth(format!(
            "{} asks for {other} authentication, which berth does not speak",
            remote.registry
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_keep_commas_inside_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(
            params,
            [
                ("realm".to_owned(), "https://auth.example/token".to_owned()),
                ("service".to_owned(), "registry.example".to_owned()),
                ("scope".to_owned(), "repository:a/b:pull,push".to_owned()),
            ]
        );
        let (scheme, params) = parse_challenge("Basic realm=\"x\"");
        assert_eq!((scheme.as_str(), params.len()), ("basic", 1));
    }
}
