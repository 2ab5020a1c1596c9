//! Where a pod may run: `nodeSelector`, node affinity and tolerations, as
//! berth gives them meaning.
//!
//! berth's nodes carry the labels a kubelet gives its node
//! (`kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch`), and
//! the scheduler places a pod only on a node its `nodeSelector` and its
//! required node affinity match; a pod no node matches stays Pending with
//! the reason, as on a cluster. Preferred terms and pod (anti-)affinity are
//! accepted and not enforced: they spread pods across nodes, and berth's
//! nodes share one machine. berth's nodes have no taints, so tolerations
//! are accepted and change nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    /// Accepted, not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<serde_json::Value>,
    /// Accepted, not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    /// Accepted, not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_during_scheduling_ignored_during_execution: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// Only `metadata.name` is a field Kubernetes allows here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];

impl NodeSelectorRequirement {
    fn matches(&self, value: Option<&str>) -> bool {
        let number = |s: &str| s.parse::<i64>().ok();
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|w| w == v)),
            "NotIn" => value.is_none_or(|v| !self.values.iter().any(|w| w == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(have), Some(bound)) = (
                    value.and_then(number),
                    self.values.first().and_then(|s| number(s)),
                ) else {
                    return false;
                };
                if self.operator == "Gt" {
                    have > bound
                } else {
                    have < bound
                }
            }
            _ => false,
        }
    }

    fn check(&self, path: &str) -> Result<(), (String, String)> {
        if !OPERATORS.contains(&self.operator.as_str()) {
            return Err((
                format!("{path}.operator"),
                format!("{:?} is not one of {}", self.operator, OPERATORS.join(", ")),
            ));
        }
        if matches!(self.operator.as_str(), "Gt" | "Lt")
            && (self.values.len() != 1 || self.values[0].parse::<i64>().is_err())
        {
            return Err((
                format!("{path}.values"),
                format!("{} needs exactly one integer value", self.operator),
            ));
        }
        let wants_values = matches!(self.operator.as_str(), "In" | "NotIn" | "Gt" | "Lt");
        if wants_values == self.values.is_empty() {
            let message = if wants_values {
                "must have values"
            } else {
                "must have no values"
            };
            return Err((format!("{path}.values"), message.into()));
        }
        Ok(())
    }
}

/// Whether a node named `name` with `labels` may run a pod with this
/// `node_selector` and `affinity`.
pub fn fits(
    name: &str,
    labels: &BTreeMap<String, String>,
    node_selector: &BTreeMap<String, String>,
    affinity: Option<&Affinity>,
) -> bool {
    if !node_selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let Some(required) = affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    // Terms are ORed; the requirements of one term are ANDed; an empty
    // term matches no node, as in Kubernetes.
    required.node_selector_terms.iter().any(|term| {
        !(term.match_expressions.is_empty() && term.match_fields.is_empty())
            && term
                .match_expressions
                .iter()
                .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
            && term.match_fields.iter().all(|r| r.matches(Some(name)))
    })
}

/// Checks the requirements' operators and values; `(field path, message)`.
pub fn check_affinity(affinity: &Affinity, path: &str) -> Result<(), (String, String)> {
    let Some(required) = affinity.node_affinity.as_ref().and_then(|n| {
        n.required_during_scheduling_ignored_during_execution
            .as_ref()
    }) else {
        return Ok(());
    };
    let base = format!("{path}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution");
    if required.node_selector_terms.is_empty() {
        return Err((
            format!("{base}.nodeSelectorTerms"),
            "must have at least one term".into(),
        ));
    }
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        let tpath = format!("{base}.nodeSelectorTerms[{i}]");
        for (j, r) in term.match_expressions.iter().enumerate() {
            r.check(&format!("{tpath}.matchExpressions[{j}]"))?;
        }
        for (j, r) in term.match_fields.iter().enumerate() {
            let rpath = format!("{tpath}.matchFields[{j}]");
            if r.key != "metadata.name" {
                return Err((
                    format!("{rpath}.key"),
                    format!(
                        "{:?}: the one field nodes are matched on is metadata.name",
                        r.key
                    ),
                ));
            }
            r.check(&rpath)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/hostname", "berth"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn requiring(expressions: Vec<NodeSelectorRequirement>) -> Affinity {
        Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: expressions,
                        match_fields: vec![],
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Affinity::default()
        }
    }

    fn req(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn selectors_and_required_affinity_pick_nodes_by_their_labels() {
        let none = BTreeMap::new();
        assert!(fits("berth", &labels(), &none, None));
        let arm: BTreeMap<String, String> =
            [("kubernetes.io/arch".to_owned(), "arm64".to_owned())].into();
        assert!(!fits("berth", &labels(), &arm, None));
        let linux = requiring(vec![req("kubernetes.io/os", "In", &["linux", "windows"])]);
        assert!(fits("berth", &labels(), &none, Some(&linux)));
        let gpu = requiring(vec![req("gpu", "Exists", &[])]);
        assert!(!fits("berth", &labels(), &none, Some(&gpu)));
        let no_gpu = requiring(vec![req("gpu", "DoesNotExist", &[])]);
        assert!(fits("berth", &labels(), &none, Some(&no_gpu)));
    }

    #[test]
    fn an_empty_term_matches_no_node_and_no_terms_is_refused() {
        let none = BTreeMap::new();
        let mut empty = requiring(vec![]);
        assert!(!fits("berth", &labels(), &none, Some(&empty)));
        empty
            .node_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_mut()
            .unwrap()
            .node_selector_terms
            .clear();
        assert!(check_affinity(&empty, "a").is_err());
        let two = requiring(vec![req("n", "Gt", &["1", "2"])]);
        assert!(check_affinity(&two, "a").is_err());
        let word = requiring(vec![req("n", "Lt", &["many"])]);
        assert!(check_affinity(&word, "a").is_err());
    }

    #[test]
    fn a_requirement_of_the_wrong_shape_is_refused_by_path() {
        let bad = requiring(vec![req("a", "Sometimes", &[])]);
        let (path, _) = check_affinity(&bad, "spec.affinity").unwrap_err();
        assert!(path.ends_with("matchExpressions[0].operator"), "{path}");
        let valueless = requiring(vec![req("a", "In", &[])]);
        let (path, _) = check_affinity(&valueless, "spec.affinity").unwrap_err();
        assert!(path.ends_with("matchExpressions[0].values"), "{path}");
    }
}
