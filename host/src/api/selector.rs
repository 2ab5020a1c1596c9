//! Label and field selectors in the syntax kubectl sends: `a=b,c!=d`,
//! `env in (prod,qa)`, `tier notin (cache)`, `partition`, `!partition`;
//! fields with `=`, `==` and `!=`.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed label selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Term>);

/// Splits at commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {text:?}"));
    }
    terms.push(&text[start..]);
    Ok(terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect())
}

fn check_key(key: &str, whole: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?} in selector {whole:?}"))
    }
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values in {whole:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut terms = Vec::new();
        for term in split_terms(text)? {
            let parsed = if let Some(key) = term.strip_prefix('!') {
                Term::Absent(check_key(key.trim(), text)?)
            } else if let Some((key, value)) = term.split_once("!=") {
                Term::NotEquals(check_key(key.trim(), text)?, value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("==") {
                Term::Equals(check_key(key.trim(), text)?, value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Term::Equals(check_key(key.trim(), text)?, value.trim().to_owned())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                Term::NotIn(check_key(key.trim(), text)?, set_values(rest, text)?)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                Term::In(check_key(key.trim(), text)?, set_values(rest, text)?)
            } else {
                Term::Exists(check_key(term, text)?)
            };
            terms.push(parsed);
        }
        Ok(LabelSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|term| match term {
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::NotEquals(k, v) => labels.get(k) != Some(v),
            Term::In(k, values) => labels.get(k).is_some_and(|l| values.contains(l)),
            Term::NotIn(k, values) => labels.get(k).is_none_or(|l| !values.contains(l)),
            Term::Exists(k) => labels.contains_key(k),
            Term::Absent(k) => !labels.contains_key(k),
        })
    }

    /// Matches the labels of a whole Kubernetes object.
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = object["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        self.matches(&labels)
    }
}

/// A parsed field selector over the fields each kind supports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields a field selector may name for `kind`, as kube-apiserver
/// allows them.
fn supported(kind: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || match kind {
            "Pod" => matches!(
                field,
                "status.phase" | "spec.nodeName" | "spec.restartPolicy" | "status.podIP"
            ),
            "Event" => field.starts_with("involvedObject.") || matches!(field, "reason" | "type"),
            "Secret" => field == "type",
            "Namespace" => field == "status.phase",
            "ReplicaSet" => field == "status.replicas",
            "Job" => field == "status.successful",
            _ => false,
        }
}

impl FieldSelector {
    pub fn parse(kind: &str, text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in split_terms(text)? {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let field = field.trim();
            if !supported(kind, field) {
                return Err(format!(
                    "field label not supported: {field} (for {kind} berth selects on metadata.name, metadata.namespace{})",
                    match kind {
                        "Pod" => ", status.phase, spec.nodeName, spec.restartPolicy, status.podIP",
                        "Event" => ", involvedObject.*, reason, type",
                        _ => "",
                    }
                ));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            // A Job's `status.successful` is its `status.succeeded`
            // (kube-apiserver's name for it), and counts 0 when unset.
            let path = match field.as_str() {
                "status.successful" => "status.succeeded",
                other => other,
            };
            let mut at = object;
            for part in path.split('.') {
                at = &at[part];
            }
            let actual = match at {
                Value::String(s) => s.clone(),
                Value::Null if path == "status.succeeded" => "0".into(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_operator_selects_as_kubernetes_does() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,api)", true),
            ("app notin (web)", false),
            ("env notin (prod)", true),
            ("tier", true),
            ("!tier", false),
            ("!env", true),
            ("app=web,tier in (front, back)", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (text, expected) in cases {
            assert_eq!(
                LabelSelector::parse(text).unwrap().matches(&l),
                expected,
                "{text}"
            );
        }
        assert!(LabelSelector::parse("app in (web").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selectors_name_supported_fields_only() {
        let pod = serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "status": {"phase": "Running"},
        });
        let s = FieldSelector::parse("Pod", "status.phase=Running,metadata.name!=q").unwrap();
        assert!(s.matches(&pod));
        let s = FieldSelector::parse("Pod", "status.phase!=Running").unwrap();
        assert!(!s.matches(&pod));
        let e = FieldSelector::parse("ConfigMap", "data.x=1").unwrap_err();
        assert!(e.contains("data.x"), "{e}");
    }
}
