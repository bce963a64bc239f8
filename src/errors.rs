//! How an error is printed where no `anyhow` is at hand (logs, status lines, stored
//! reasons): one line with every cause, outermost first, as `anyhow`'s `{:#}` prints it.
//! Error types keep their causes as `source()` and leave them out of their own message, so
//! that each cause is said once.

/// `e` and its sources, joined by ": ".
pub fn chain(e: &(dyn std::error::Error + '_)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read {path}")]
        struct Outer {
            path: String,
            source: std::io::Error,
        }
        let e = Outer {
            path: "x.json".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(super::chain(&e), "cannot read x.json: no such file");
    }
}
