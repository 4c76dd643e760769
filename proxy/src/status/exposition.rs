//! Reads the Prometheus text exposition this process writes: the status
//! page is computed from exactly what Prometheus scrapes, so the two never
//! disagree.

/// One series' value: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Point {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Every sample line of `text`; comments and lines it cannot read are
/// skipped (it is our own output: there are none of the latter).
pub fn parse(text: &str) -> Vec<Point> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Point> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = rest[..eq].trim_start_matches(',').to_owned();
            let (value, after) = quoted(rest[eq + 1..].strip_prefix('"')?)?;
            labels.push((label, value));
            rest = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Point { name, labels, value })
}

/// A label value up to its closing quote, unescaped, and what follows.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_registry_writes() {
        let text = "# HELP x y\n# TYPE proxy_requests counter\n\
                    proxy_requests_total{rule=\"a \\\"b\\\"\",status=\"200\"} 3\n\
                    proxy_connections_open 2\n\
                    proxy_request_duration_seconds_bucket{le=\"+Inf\",rule=\"users\"} 7\n\
                    # EOF\n";
        let points = parse(text);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].name, "proxy_requests_total");
        assert_eq!(points[0].label("rule"), Some("a \"b\""));
        assert_eq!(points[0].label("status"), Some("200"));
        assert_eq!(points[0].value, 3.0);
        assert_eq!((points[1].labels.len(), points[1].value), (0, 2.0));
        assert_eq!(points[2].label("le"), Some("+Inf"));
    }

    #[test]
    fn the_live_registry_is_read_whole() {
        let metrics = crate::metrics::Metrics::new();
        metrics.request("users", 200, "hit", std::time::Duration::from_millis(1));
        let text = metrics.encode();
        let samples = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
        assert_eq!(parse(&text).len(), samples);
    }
}
