//! Routing: which queues each `(id, case)` output goes to, what stays
//! unrouted, and which configured cases can never match.

use std::collections::HashMap;

use crate::base::case::{CaseDomain, CaseValue};
use crate::execute::once::NewOutboxRow;
use crate::protocol::output_message_id;
use crate::sysmap::{Route, ServiceWiring};

/// A service's routes by case. Cases match by kind and value: `true`,
/// `"true"` and `1` are different routes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    by_case: HashMap<CaseValue, Vec<String>>,
    routes: Vec<Route>,
}

/// Where one `process` call's outputs go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    /// `(queue, id)` for every message to send, in output order.
    pub sends: Vec<(String, u64)>,
    /// Outputs whose case has no route: logged and counted, not an error.
    pub unrouted: Vec<(u64, CaseValue)>,
}

impl RoutePlan {
    /// The messages to send, each with its deterministic `message-id`
    /// derived from `inbound`, the identity of the message whose call
    /// returned the outputs ([`output_message_id`]).
    pub(crate) fn messages(&self, inbound: &str) -> Vec<NewOutboxRow> {
        let mut seen: HashMap<(&str, u64), u32> = HashMap::new();
        self.sends
            .iter()
            .map(|(queue, id)| {
                let nth = seen.entry((queue.as_str(), *id)).or_insert(0);
                let message_id = output_message_id(inbound, queue, *id, *nth);
                *nth += 1;
                NewOutboxRow {
                    message_id,
                    queue: queue.clone(),
                    request: *id,
                }
            })
            .collect()
    }
}

impl RouteTable {
    /// The routes of `wiring`.
    pub(crate) fn new(wiring: &ServiceWiring) -> Self {
        RouteTable {
            by_case: wiring
                .routes
                .iter()
                .map(|r| (r.case.clone(), r.queues.clone()))
                .collect(),
            routes: wiring.routes.clone(),
        }
    }

    /// The queues of `case`, or `None` if the sys-map has no entry for it.
    pub(crate) fn queues(&self, case: &CaseValue) -> Option<&[String]> {
        self.by_case.get(case).map(Vec::as_slice)
    }

    /// Plans the sends for a call's outputs: each ID to every queue of its case.
    pub(crate) fn plan(&self, outputs: &[(u64, CaseValue)]) -> RoutePlan {
        let mut plan = RoutePlan::default();
        for (id, case) in outputs {
            match self.queues(case) {
                Some(queues) => plan.sends.extend(queues.iter().map(|q| (q.clone(), *id))),
                None => plan.unrouted.push((*id, case.clone())),
            }
        }
        plan
    }

    /// Configured routes whose case a function with `domain` can never produce.
    pub(crate) fn unreachable(&self, domain: &CaseDomain) -> Vec<&Route> {
        self.routes.iter().filter(|r| !domain.contains(&r.case)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::case::Case;

    fn table(json: &str) -> RouteTable {
        let out: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        RouteTable::new(&ServiceWiring {
            inbound: "in".into(),
            routes: out
                .iter()
                .map(|r| Route {
                    case: CaseValue::from_json(&r["case"]).unwrap(),
                    queues: serde_json::from_value(r["queues"].clone()).unwrap(),
                })
                .collect(),
            warnings: vec![],
            ..ServiceWiring::default()
        })
    }

    #[test]
    fn fans_out_and_matches_by_kind() {
        let t = table(
            r#"[{"case": true, "queues": ["a", "b"]}, {"case": "true", "queues": ["s"]}, {"case": 1, "queues": ["i"]}]"#,
        );
        let plan = t.plan(&[
            (1, true.to_case()),
            (2, "true".to_case()),
            (3, 1u8.to_case()),
            (4, false.to_case()),
        ]);
        assert_eq!(
            plan.sends,
            [("a".into(), 1), ("b".into(), 1), ("s".into(), 2), ("i".into(), 3)]
        );
        assert_eq!(plan.unrouted, [(4, CaseValue::Bool(false))]);
    }

    #[test]
    fn messages_get_ids_that_a_run_again_repeats_and_no_two_share() {
        let t = table(r#"[{"case": true, "queues": ["a", "b"]}]"#);
        let plan = t.plan(&[(1, true.to_case()), (1, true.to_case()), (2, true.to_case())]);
        let ids = |inbound| {
            plan.messages(inbound)
                .into_iter()
                .map(|m| m.message_id)
                .collect::<Vec<_>>()
        };
        let first = ids("m-1");
        assert_eq!(first, ids("m-1"), "deterministic");
        assert_eq!(
            first.iter().collect::<std::collections::HashSet<_>>().len(),
            6,
            "{first:?}"
        );
        assert!(
            ids("m-2").iter().all(|id| !first.contains(id)),
            "another inbound message"
        );
        assert!(
            first.iter().all(|id| id.starts_with("o-") && id.len() == 34),
            "{first:?}"
        );
    }

    #[test]
    fn reports_cases_the_type_cannot_produce() {
        let t = table(
            r#"[{"case": true, "queues": ["a"]}, {"case": "yes", "queues": ["b"]}, {"case": 300, "queues": ["c"]}]"#,
        );
        let cases = |d: CaseDomain| t.unreachable(&d).iter().map(|r| r.case.to_string()).collect::<Vec<_>>();
        assert_eq!(cases(bool::domain()), ["\"yes\"", "300"]);
        assert_eq!(cases(u8::domain()), ["true", "\"yes\"", "300"]);
        assert_eq!(cases(u16::domain()), ["true", "\"yes\""]);
        assert_eq!(cases(String::domain()), ["true", "300"]);
    }
}
