//! The pipeline as a picture: services, queues, buckets and event exchanges
//! from the sys-map, rendered as Mermaid, Graphviz DOT or a self-contained SVG.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::execute::service::ServiceDef;
use crate::execute::typed::ObjectSchema;
use crate::sysmap::{ServiceWiring, SysMap, SysMapError};

/// One service as the sys-map wires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceNode {
    /// The service's name.
    pub name: String,
    /// Its inbound queue and routes.
    pub wiring: ServiceWiring,
    /// `(reference, bucket)` for each bucket reference the sys-map defines.
    pub buckets: Vec<(String, String)>,
    /// The typed objects it reads and writes, when it is linked into this
    /// binary (or registered, a Python service).
    pub objects: Vec<ObjectSchema>,
}

/// A set of services and how queues and buckets connect them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    /// The services, in the order given.
    pub services: Vec<ServiceNode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Queue,
    Bucket,
    /// A topic exchange of events.
    Exchange,
}

/// A node: its kind and name.
type Node = (Kind, String);

struct Edge {
    from: Node,
    to: Node,
    label: String,
    /// Objects rather than messages (drawn dashed).
    bucket: bool,
}

/// Whether a bucket reference is written (`out`, `output`, `out-thumbs`...)
/// rather than read: the original crate's naming convention.
fn is_output(reference: &str) -> bool {
    reference.starts_with("out")
}

impl Topology {
    /// Reads `services` from `sysmap`, with the bucket references in `references`
    /// that the sys-map defines for each (absent ones are skipped).
    pub(crate) async fn from_sysmap(
        sysmap: &SysMap,
        services: &[String],
        references: &[String],
    ) -> Result<Self, SysMapError> {
        let mut topology = Topology::default();
        for name in services {
            let wiring = sysmap.service(name).await?;
            let objects = ServiceDef::named(name)
                .map(ServiceDef::object_schemas)
                .unwrap_or_default();
            let mut buckets = Vec::new();
            // The usual references, and every one a typed object names.
            let mut references = references.to_vec();
            for object in &objects {
                if !references.contains(&object.reference) {
                    references.push(object.reference.clone());
                }
            }
            for reference in &references {
                match sysmap.bucket(name, reference).await {
                    Ok(bucket) => buckets.push((reference.clone(), bucket)),
                    Err(SysMapError::Missing { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            topology.services.push(ServiceNode {
                name: name.clone(),
                wiring,
                buckets,
                objects,
            });
        }
        Ok(topology)
    }

    fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for service in &self.services {
            let me = (Kind::Service, service.name.clone());
            edges.push(Edge {
                from: (Kind::Queue, service.wiring.inbound.clone()),
                to: me.clone(),
                label: String::new(),
                bucket: false,
            });
            // One edge per queue, labelled with every case that routes there.
            let mut by_queue: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for route in &service.wiring.routes {
                for queue in &route.queues {
                    by_queue.entry(queue).or_default().push(route.case.to_string());
                }
            }
            for (queue, cases) in by_queue {
                edges.push(Edge {
                    from: me.clone(),
                    to: (Kind::Queue, queue.to_string()),
                    label: cases.join(", "),
                    bucket: false,
                });
            }
            if let Some(exchange) = &service.wiring.events {
                edges.push(Edge {
                    from: me.clone(),
                    to: (Kind::Exchange, exchange.clone()),
                    label: "events".into(),
                    bucket: false,
                });
            }
            for subscription in &service.wiring.subscriptions {
                edges.push(Edge {
                    from: (Kind::Exchange, subscription.exchange.clone()),
                    to: (Kind::Queue, service.wiring.inbound.clone()),
                    label: subscription.events.join(", "),
                    bucket: false,
                });
            }
            for (reference, bucket) in &service.buckets {
                let bucket = (Kind::Bucket, bucket.clone());
                let (from, to) = if is_output(reference) {
                    (me.clone(), bucket)
                } else {
                    (bucket, me.clone())
                };
                edges.push(Edge {
                    from,
                    to,
                    label: reference.clone(),
                    bucket: true,
                });
            }
        }
        edges
    }

    fn nodes(&self, edges: &[Edge]) -> Vec<Node> {
        let mut seen = BTreeSet::new();
        let mut nodes = Vec::new();
        for node in edges.iter().flat_map(|e| [&e.from, &e.to]) {
            if seen.insert(node.clone()) {
                nodes.push(node.clone());
            }
        }
        nodes
    }

    /// A Mermaid flowchart (paste into Markdown on GitHub, GitLab, ...).
    pub(crate) fn mermaid(&self) -> String {
        let edges = self.edges();
        let nodes = self.nodes(&edges);
        let id = |node: &Node| format!("n{}", nodes.iter().position(|n| n == node).unwrap_or(0));
        let text = |s: &str| s.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        for node in &nodes {
            let label = text(&node.1);
            let _ = match node.0 {
                Kind::Service => writeln!(out, "  {}[\"{label}\"]:::service", id(node)),
                Kind::Queue => writeln!(out, "  {}[(\"{label}\")]:::queue", id(node)),
                Kind::Bucket => writeln!(out, "  {}[/\"{label}\"/]:::bucket", id(node)),
                Kind::Exchange => writeln!(out, "  {}{{{{\"{label}\"}}}}:::exchange", id(node)),
            };
        }
        for edge in &edges {
            let (from, to) = (id(&edge.from), id(&edge.to));
            let _ = match (edge.bucket, edge.label.is_empty()) {
                (true, _) => writeln!(out, "  {from} -. \"{}\" .-> {to}", text(&edge.label)),
                (false, true) => writeln!(out, "  {from} --> {to}"),
                (false, false) => writeln!(out, "  {from} -- \"{}\" --> {to}", text(&edge.label)),
            };
        }
        out.push_str("  classDef service fill:#dbeafe,stroke:#1d4ed8\n");
        out.push_str("  classDef queue fill:#f1f5f9,stroke:#475569\n");
        out.push_str("  classDef bucket fill:#fef9c3,stroke:#a16207\n");
        if nodes.iter().any(|node| node.0 == Kind::Exchange) {
            out.push_str("  classDef exchange fill:#fce7f3,stroke:#be185d\n");
        }
        out
    }

    /// A Graphviz digraph (`dot -Tpng`).
    pub(crate) fn dot(&self) -> String {
        let edges = self.edges();
        let nodes = self.nodes(&edges);
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let key = |node: &Node| {
            let prefix = match node.0 {
                Kind::Service => "service",
                Kind::Queue => "queue",
                Kind::Bucket => "bucket",
                Kind::Exchange => "exchange",
            };
            quote(&format!("{prefix}:{}", node.1))
        };
        let mut out = String::from(
            "digraph pipeline {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\"];\n",
        );
        for node in &nodes {
            let style = match node.0 {
                Kind::Service => "shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\"",
                Kind::Queue => "shape=cylinder, style=filled, fillcolor=\"#f1f5f9\"",
                Kind::Bucket => "shape=folder, style=filled, fillcolor=\"#fef9c3\"",
                Kind::Exchange => "shape=hexagon, style=filled, fillcolor=\"#fce7f3\"",
            };
            let _ = writeln!(out, "  {} [label={}, {style}];", key(node), quote(&node.1));
        }
        for edge in &edges {
            let mut attributes = Vec::new();
            if !edge.label.is_empty() {
                attributes.push(format!("label={}", quote(&edge.label)));
            }
            if edge.bucket {
                attributes.push("style=dashed".to_string());
            }
            let attributes = if attributes.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attributes.join(", "))
            };
            let _ = writeln!(out, "  {} -> {}{attributes};", key(&edge.from), key(&edge.to));
        }
        out.push_str("}\n");
        out
    }

    /// A standalone SVG, laid out left to right by each node's depth in the pipeline.
    pub(crate) fn svg(&self) -> String {
        const GAP_X: f64 = 130.0;
        const GAP_Y: f64 = 28.0;
        const HEIGHT: f64 = 40.0;
        const MARGIN: f64 = 24.0;
        let edges = self.edges();
        let nodes = self.nodes(&edges);
        let index = |node: &Node| nodes.iter().position(|n| n == node).unwrap_or(0);
        // Column: the longest path of messages and objects reaching the
        // node (bounded, so a cycle in the routes cannot loop).
        let mut column = vec![0usize; nodes.len()];
        for _ in 0..nodes.len() {
            for edge in &edges {
                let (from, to) = (index(&edge.from), index(&edge.to));
                if column[to] < column[from] + 1 && column[from] < nodes.len() {
                    column[to] = column[from] + 1;
                }
            }
        }
        let width = |node: &Node| (node.1.chars().count() as f64 * 7.5 + 28.0).max(96.0);
        let columns = column.iter().copied().max().unwrap_or(0) + 1;
        let mut column_width = vec![0.0f64; columns];
        let mut rows = vec![0usize; columns];
        let mut place = vec![(0.0, 0.0); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            column_width[column[i]] = column_width[column[i]].max(width(node));
        }
        let column_x: Vec<f64> = column_width
            .iter()
            .scan(MARGIN, |x, w| {
                let here = *x;
                *x += w + GAP_X;
                Some(here)
            })
            .collect();
        for (i, _) in nodes.iter().enumerate() {
            let c = column[i];
            place[i] = (column_x[c], MARGIN + rows[c] as f64 * (HEIGHT + GAP_Y));
            rows[c] += 1;
        }
        let total_w = column_x.last().copied().unwrap_or(MARGIN) + column_width.last().copied().unwrap_or(0.0) + MARGIN;
        let total_h = MARGIN * 2.0 + rows.iter().copied().max().unwrap_or(1) as f64 * (HEIGHT + GAP_Y);
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };

        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_w:.0}\" height=\"{total_h:.0}\" viewBox=\"0 0 {total_w:.0} {total_h:.0}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#475569\"/></marker></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for edge in &edges {
            let (a, b) = (index(&edge.from), index(&edge.to));
            let (x1, y1) = (place[a].0 + width(&nodes[a]), place[a].1 + HEIGHT / 2.0);
            let (x2, y2) = (place[b].0, place[b].1 + HEIGHT / 2.0);
            let bend = ((x2 - x1).abs() / 2.0).max(40.0);
            let style = if edge.bucket {
                "stroke-dasharray=\"5 4\" marker-end=\"url(#arrow)\""
            } else {
                "marker-end=\"url(#arrow)\""
            };
            let _ = writeln!(
                out,
                "<path d=\"M {x1:.1} {y1:.1} C {:.1} {y1:.1}, {:.1} {y2:.1}, {x2:.1} {y2:.1}\" fill=\"none\" stroke=\"#475569\" stroke-width=\"1.4\" {style}/>",
                x1 + bend,
                x2 - bend
            );
            if !edge.label.is_empty() {
                let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
                let w = edge.label.chars().count() as f64 * 7.0 + 10.0;
                let _ = writeln!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"18\" rx=\"4\" fill=\"white\" stroke=\"#cbd5e1\"/><text x=\"{mx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#334155\">{}</text>",
                    mx - w / 2.0,
                    my - 9.0,
                    my + 4.5,
                    esc(&edge.label)
                );
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            let (x, y) = place[i];
            let w = width(node);
            let (fill, stroke, radius) = match node.0 {
                Kind::Service => ("#dbeafe", "#1d4ed8", 8.0),
                Kind::Queue => ("#f1f5f9", "#475569", HEIGHT / 2.0),
                Kind::Bucket => ("#fef9c3", "#a16207", 2.0),
                Kind::Exchange => ("#fce7f3", "#be185d", 12.0),
            };
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{HEIGHT}\" rx=\"{radius}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#0f172a\"{}>{}</text>",
                x + w / 2.0,
                y + HEIGHT / 2.0 + 4.5,
                if node.0 == Kind::Service { " font-weight=\"bold\"" } else { "" },
                esc(&node.1)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::case::CaseValue;
    use crate::sysmap::Route;

    fn two_stages() -> Topology {
        let route = |case: CaseValue, queues: &[&str]| Route {
            case,
            queues: queues.iter().map(|q| q.to_string()).collect(),
        };
        Topology {
            services: vec![
                ServiceNode {
                    name: "ingest".into(),
                    wiring: ServiceWiring {
                        inbound: "ingest".into(),
                        routes: vec![
                            route(CaseValue::Bool(true), &["resize", "audit"]),
                            route(CaseValue::Bool(false), &["audit"]),
                        ],
                        warnings: vec![],
                        ..ServiceWiring::default()
                    },
                    buckets: vec![("in".into(), "uploads".into()), ("out".into(), "normalized".into())],
                    objects: vec![],
                },
                ServiceNode {
                    name: "resize".into(),
                    wiring: ServiceWiring {
                        inbound: "resize".into(),
                        routes: vec![route(CaseValue::Str("small".into()), &["done"])],
                        warnings: vec![],
                        ..ServiceWiring::default()
                    },
                    buckets: vec![("in".into(), "normalized".into())],
                    objects: vec![],
                },
            ],
        }
    }

    #[test]
    fn mermaid() {
        assert_eq!(
            two_stages().mermaid(),
            r##"flowchart LR
  n0[("ingest")]:::queue
  n1["ingest"]:::service
  n2[("audit")]:::queue
  n3[("resize")]:::queue
  n4[/"uploads"/]:::bucket
  n5[/"normalized"/]:::bucket
  n6["resize"]:::service
  n7[("done")]:::queue
  n0 --> n1
  n1 -- "true, false" --> n2
  n1 -- "true" --> n3
  n4 -. "in" .-> n1
  n1 -. "out" .-> n5
  n3 --> n6
  n6 -- "#quot;small#quot;" --> n7
  n5 -. "in" .-> n6
  classDef service fill:#dbeafe,stroke:#1d4ed8
  classDef queue fill:#f1f5f9,stroke:#475569
  classDef bucket fill:#fef9c3,stroke:#a16207
"##
        );
    }

    #[test]
    fn events_go_from_a_service_to_its_exchange_and_on_to_the_subscribed_queues() {
        let mut topology = two_stages();
        topology.services[0].wiring.events = Some("pipeline.events".into());
        topology.services[1].wiring.subscriptions = vec![crate::sysmap::Subscription {
            exchange: "pipeline.events".into(),
            events: vec!["ingest.progress".into(), "*.invalid-input".into()],
        }];
        let mermaid = topology.mermaid();
        for line in [
            "  n4{{\"pipeline.events\"}}:::exchange",
            "  n1 -- \"events\" --> n4",
            "  n4 -- \"ingest.progress, *.invalid-input\" --> n3",
            "  classDef exchange fill:#fce7f3,stroke:#be185d",
        ] {
            assert!(mermaid.lines().any(|l| l == line), "missing {line:?} in\n{mermaid}");
        }
        let dot = topology.dot();
        assert!(
            dot.contains("\"exchange:pipeline.events\" [label=\"pipeline.events\", shape=hexagon"),
            "{dot}"
        );
        assert!(topology.svg().contains(">pipeline.events</text>"));
    }

    #[test]
    fn dot() {
        let dot = two_stages().dot();
        for line in [
            "digraph pipeline {",
            "  \"queue:ingest\" [label=\"ingest\", shape=cylinder, style=filled, fillcolor=\"#f1f5f9\"];",
            "  \"service:ingest\" [label=\"ingest\", shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\"];",
            "  \"bucket:uploads\" [label=\"uploads\", shape=folder, style=filled, fillcolor=\"#fef9c3\"];",
            "  \"queue:ingest\" -> \"service:ingest\";",
            "  \"service:ingest\" -> \"queue:audit\" [label=\"true, false\"];",
            "  \"service:ingest\" -> \"bucket:normalized\" [label=\"out\", style=dashed];",
            "  \"service:resize\" -> \"queue:done\" [label=\"\\\"small\\\"\"];",
        ] {
            assert!(dot.lines().any(|l| l == line), "missing {line:?} in\n{dot}");
        }
        assert!(dot.ends_with("}\n"));
    }

    #[test]
    fn svg_lays_the_flow_out_left_to_right() {
        let svg = two_stages().svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        let x_of = |label: &str| -> f64 {
            let text = format!(">{label}</text>");
            let at = svg.find(&text).unwrap_or_else(|| panic!("no node {label}"));
            let rect = svg[..at].rfind("<rect x=\"").unwrap();
            let rest = &svg[rect + 9..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        };
        // uploads -> ingest -> normalized -> resize -> done
        assert!(x_of("uploads") < x_of("normalized"));
        assert!(x_of("normalized") < x_of("done"));
        assert_eq!(svg.matches("marker-end").count(), 8, "every edge has an arrow");
    }
}
